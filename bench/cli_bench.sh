#!/usr/bin/env bash
# Side-by-side benchmarks of the herdsman CLI against the tools people use today.
#
# usage (from the repository root):
#   cargo build --release -p herdsman-cli --bin herdsman --example primes_worker
#   bench/cli_bench.sh [primes|overhead|exec|checkpoint|memory|all]...
#
#   primes      reference workload, 20k rows, 2 workers: herdsman + Python worker,
#               multiprocessing.Pool baseline, herdsman + Rust worker, sequential Python
#   overhead    per-record cost: 1M narrow CSV rows through `cat` as the worker (records/s)
#   exec        one process per record: herdsman -x true vs xargs -P2 vs GNU parallel
#   checkpoint  reference workload with and without --no-checkpoint
#   memory      peak RSS with `cat` as the worker on a 100 MB and a 1 GB input
#               (opt-in, not part of `all`: it writes about 1.2 GB under bench/out/)
#   baselines   only the non-herdsman commands of primes and exec (no build needed)
#   resume      resume cost: a ~1 GB CSV is processed to about 90% and killed (SIGKILL);
#               then the time from starting the same command to the first new record
#               reaching a worker (opt-in, not part of `all`: it writes about 2 GB)
#
# Each command runs RUNS times (default 3) and the tables report medians; hyperfine is used
# when installed, bench/timeit.py otherwise. Everything is generated into bench/out/.
# Settings via environment: RUNS, ROWS (20000), MAX_VALUE (1000), OVERHEAD_ROWS (1000000),
# EXEC_N (2000), MEMORY_MB ("100 1000", the input sizes of `memory`), HERDSMAN
# (target/release/herdsman), RUST_WORKER (target/release/examples/primes_worker).
# CARGO_TARGET_DIR is honoured.
set -euo pipefail

cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
ROWS=${ROWS:-20000}
MAX_VALUE=${MAX_VALUE:-1000}
OVERHEAD_ROWS=${OVERHEAD_ROWS:-1000000}
EXEC_N=${EXEC_N:-2000}
TARGET=${CARGO_TARGET_DIR:-target}
HERDSMAN=${HERDSMAN:-$TARGET/release/herdsman}
RUST_WORKER=${RUST_WORKER:-$TARGET/release/examples/primes_worker}
OUT=bench/out
mkdir -p "$OUT"

# Options every herdsman run shares: quiet, and checkpoint state kept under bench/out/.
H="$HERDSMAN run --progress none"

need() {
    for f in "$@"; do
        [[ -x $f ]] || { echo "missing $f: run 'cargo build --release -p herdsman-cli --bin herdsman --example primes_worker' first" >&2; exit 2; }
    done
}

# bench TITLE PREPARE [--records N] -- NAME CMD [NAME CMD ...]: time the commands, print a table.
bench() {
    local title=$1 prepare=$2 records=()
    shift 2
    if [[ $1 == --records ]]; then records=(--records "$2"); shift 2; fi
    [[ $1 == -- ]] && shift
    local json="$OUT/$(echo "$title" | tr -c 'a-zA-Z0-9\n' '_').json" args=()
    while (($#)); do args+=(-n "$1" "$2"); shift 2; done
    echo "== $title" >&2
    if command -v hyperfine >/dev/null; then
        # -i: herdsman exits 1 when some records failed, as the reference workload's bad rows do.
        hyperfine --runs "$RUNS" --warmup 0 -i --style basic --prepare "$prepare" \
            --export-json "$json" "${args[@]}" >&2
    else
        python3 bench/timeit.py run --runs "$RUNS" --prepare "$prepare" --export-json "$json" "${args[@]}"
    fi
    echo
    echo "### $title"
    echo
    python3 bench/timeit.py table "$json" "${records[@]}"
}

# expect_lines FILE N: fail loudly when a benchmarked command did not produce its output.
expect_lines() {
    local got
    got=$(wc -l <"$1")
    if [[ $got -ne $2 ]]; then
        echo "CHECK FAILED: $1 has $got lines, expected $2" >&2
        return 1
    fi
}

primes_input() {
    PRIMES_CSV=$OUT/primes-$ROWS.csv
    [[ -s $PRIMES_CSV ]] || python3 examples/primes/generate.py "$ROWS" --seed 1 \
        --max-value "$MAX_VALUE" --bad-every 1000 >"$PRIMES_CSV"
    PRIMES_BAD=$((ROWS / 1000))
    PRIMES_OK=$((ROWS - PRIMES_BAD))
}

primes_baselines() {
    primes_input
    rm -f "$OUT"/mp*.jsonl "$OUT"/seq*.jsonl
    bench "Reference workload (baselines), $ROWS rows" true -- \
        "python multiprocessing.Pool(2)" "python3 bench/mp_baseline.py $PRIMES_CSV -j 2 -o $OUT/mp.jsonl --failures $OUT/mp_failures.jsonl 2>/dev/null" \
        "python sequential" "python3 bench/primes_seq.py $PRIMES_CSV -o $OUT/seq.jsonl --failures $OUT/seq_failures.jsonl 2>/dev/null"
    expect_lines "$OUT/mp.jsonl" "$PRIMES_OK"
    expect_lines "$OUT/seq.jsonl" "$PRIMES_OK"
}

primes() {
    need "$HERDSMAN" "$RUST_WORKER"
    primes_input
    local common="--protocol framed -j 2 --state $OUT/state-primes --restart"
    rm -f "$OUT"/h_*.jsonl "$OUT"/mp*.jsonl "$OUT"/seq*.jsonl
    bench "Reference workload, $ROWS rows (values <= $MAX_VALUE), 2 workers" \
        "rm -rf $OUT/state-primes" -- \
        "herdsman + Python worker" "$H -i $PRIMES_CSV -w 'python3 examples/primes/worker.py' $common -o $OUT/h_py.jsonl --failures $OUT/h_py_failures.jsonl" \
        "python multiprocessing.Pool(2)" "python3 bench/mp_baseline.py $PRIMES_CSV -j 2 -o $OUT/mp.jsonl --failures $OUT/mp_failures.jsonl 2>/dev/null" \
        "herdsman + Rust worker" "$H -i $PRIMES_CSV -w $RUST_WORKER $common -o $OUT/h_rs.jsonl --failures $OUT/h_rs_failures.jsonl" \
        "python sequential (1 core)" "python3 bench/primes_seq.py $PRIMES_CSV -o $OUT/seq.jsonl --failures $OUT/seq_failures.jsonl 2>/dev/null"
    for f in h_py h_rs mp; do expect_lines "$OUT/$f.jsonl" "$PRIMES_OK"; done
    for f in h_py h_rs mp; do expect_lines "$OUT/${f}_failures.jsonl" "$PRIMES_BAD"; done
}

overhead() {
    need "$HERDSMAN"
    local csv=$OUT/narrow-$OVERHEAD_ROWS.csv
    [[ -s $csv ]] || python3 -c "
import sys
n = int(sys.argv[1])
out = sys.stdout
out.write('a,b\n')
for start in range(0, n, 10000):
    out.write(''.join(f'{i % 1000},{i % 7}\n' for i in range(start, min(n, start + 10000))))
" "$OVERHEAD_ROWS" >"$csv"
    rm -f "$OUT"/cat*.jsonl
    bench "Per-record overhead: $OVERHEAD_ROWS narrow CSV rows through cat" true \
        --records "$OVERHEAD_ROWS" -- \
        "herdsman -w cat -j 1" "$H -i $csv -w cat -j 1 -o $OUT/cat1.jsonl --no-checkpoint" \
        "herdsman -w cat -j 2" "$H -i $csv -w cat -j 2 -o $OUT/cat2.jsonl --no-checkpoint"
    expect_lines "$OUT/cat1.jsonl" "$OVERHEAD_ROWS"
    expect_lines "$OUT/cat2.jsonl" "$OVERHEAD_ROWS"
}

exec_inputs() {
    EXEC_TXT=$OUT/exec-$EXEC_N.txt
    EXEC_CSV=$OUT/exec-$EXEC_N.csv
    seq 1 "$EXEC_N" >"$EXEC_TXT"
    { echo n; cat "$EXEC_TXT"; } >"$EXEC_CSV"
}

exec_baselines() {
    exec_inputs
    bench "One process per record (baselines), $EXEC_N records, 2 at a time" true \
        --records "$EXEC_N" -- \
        "xargs -P2 -n1 true" "xargs -P2 -n1 true <$EXEC_TXT" \
        "GNU parallel -j2 true" "parallel --will-cite -j2 true :::: $EXEC_TXT"
}

exec_bench() {
    need "$HERDSMAN"
    exec_inputs
    # The command as words after --, so it comes last.
    local herdsman_exec="$H -i $EXEC_CSV -j 2 -o $OUT/exec.jsonl --failures $OUT/exec_failures.jsonl --no-checkpoint -- true {n}"
    # `true` prints nothing, so success leaves no output records: check the exit status once.
    eval "$herdsman_exec" || { echo "CHECK FAILED: '$herdsman_exec' exited with $?" >&2; return 1; }
    bench "One process per record: $EXEC_N records, 2 at a time" true \
        --records "$EXEC_N" -- \
        "herdsman -x 'true {n}'" "$herdsman_exec" \
        "xargs -P2 -n1 true" "xargs -P2 -n1 true <$EXEC_TXT" \
        "GNU parallel -j2 true" "parallel --will-cite -j2 true :::: $EXEC_TXT"
}

checkpoint() {
    need "$HERDSMAN" "$RUST_WORKER"
    primes_input
    local common="--protocol framed -j 2"
    rm -f "$OUT"/ck_*.jsonl
    bench "Checkpoint cost, reference workload, $ROWS rows, 2 workers" \
        "rm -rf $OUT/state-ckpt" -- \
        "Python worker, checkpoint" "$H -i $PRIMES_CSV -w 'python3 examples/primes/worker.py' $common --state $OUT/state-ckpt --restart -o $OUT/ck_py.jsonl --failures $OUT/ck_py_f.jsonl" \
        "Python worker, --no-checkpoint" "$H -i $PRIMES_CSV -w 'python3 examples/primes/worker.py' $common --no-checkpoint -o $OUT/ck_py_nc.jsonl --failures $OUT/ck_py_nc_f.jsonl" \
        "Rust worker, checkpoint" "$H -i $PRIMES_CSV -w $RUST_WORKER $common --state $OUT/state-ckpt --restart -o $OUT/ck_rs.jsonl --failures $OUT/ck_rs_f.jsonl" \
        "Rust worker, --no-checkpoint" "$H -i $PRIMES_CSV -w $RUST_WORKER $common --no-checkpoint -o $OUT/ck_rs_nc.jsonl --failures $OUT/ck_rs_nc_f.jsonl"
    for f in ck_py ck_py_nc ck_rs ck_rs_nc; do expect_lines "$OUT/$f.jsonl" "$PRIMES_OK"; done
}

# A CSV of about $2 bytes: an id and a 90-character payload per row.
wide_csv() {
    python3 -c "
import sys
size = int(sys.argv[1])
pad = 'x' * 90
out = sys.stdout
out.write('id,payload\n')
written, i = 11, 0
while written < size:
    block = ''.join(f'{n},{pad}\n' for n in range(i, i + 10000))
    out.write(block)
    written += len(block)
    i += 10000
" "$2" >"$1"
}

resume() {
    need "$HERDSMAN"
    local csv=$OUT/resume-1g.csv rows=${RESUME_ROWS:-1000000}
    if [[ ! -s $csv ]]; then
        echo "generating $csv ($rows rows of about 1 KB)" >&2
        python3 -c "
import sys
pad = 'x' * 1000
w = sys.stdout.write
w('id,payload\n')
for i in range($rows):
    w(f'{i},{pad}\n')
" > "$csv"
    fi
    local state=$OUT/resume-state out=$OUT/resume.jsonl stamp=$OUT/resume-stamp
    local cmd=($HERDSMAN run --progress none -q -i "$csv" -w "python3 bench/stamp_cat.py" -j 2 \
        -o "$out" --state "$state" --chunk-size 1000)
    rm -rf "$state" "$out" "$out.partial" "$OUT/resume.failures.jsonl"*
    # Run to about 90% and kill it.
    "${cmd[@]}" & local pid=$!
    local want=$((rows * 9 / 10)) done=0
    while kill -0 $pid 2>/dev/null; do
        done=$($HERDSMAN status "$state" --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["records"])' 2>/dev/null || echo 0)
        ((done >= want)) && break
        sleep 0.05
    done
    kill -9 $pid 2>/dev/null || true
    wait $pid 2>/dev/null || true
    echo "killed with $done of $rows records committed" >&2
    # Keep the 90% state, and resume from a copy of it several times.
    rm -rf "$OUT/resume-snap" && mkdir -p "$OUT/resume-snap"
    cp -r "$state" "$OUT/resume-snap/state"
    cp "$out.partial" "$OUT/resume-snap/out.partial"
    cp "$OUT/resume.failures.jsonl.partial" "$OUT/resume-snap/failures.partial"
    local times=()
    for ((r = 0; r < RUNS; r++)); do
        rm -rf "$state" && cp -r "$OUT/resume-snap/state" "$state"
        cp "$OUT/resume-snap/out.partial" "$out.partial"
        cp "$OUT/resume-snap/failures.partial" "$OUT/resume.failures.jsonl.partial"
        rm -f "$out" "$stamp".*
        sync
        local t0
        t0=$(python3 -c 'import time; print(f"{time.time():.6f}")')
        HERDSMAN_BENCH_STAMP=$stamp "${cmd[@]}" || true
        local first
        first=$(cat "$stamp".* | sort -n | head -1)
        times+=("$(python3 -c "print(f'{$first - $t0:.3f}')")")
    done
    echo
    echo "### Resume cost: ~1 GB CSV, 90% committed; seconds from start to the first new record at a worker"
    echo
    echo "| runs | median | all |"
    echo "|---|---|---|"
    local median
    median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    echo "| ${#times[@]} | ${median} s | ${times[*]} |"
    echo
}

memory() {
    need "$HERDSMAN"
    command -v /usr/bin/time >/dev/null || { echo "memory needs /usr/bin/time (apt-get install time)" >&2; exit 2; }
    local rows=() mb file
    for mb in ${MEMORY_MB:-100 1000}; do
        file=$OUT/wide-${mb}MB.csv
        [[ -s $file ]] || { echo "generating $file" >&2; wide_csv "$file" $((mb * 1000 * 1000)); }
        /usr/bin/time -v -o "$OUT/mem-$mb.txt" $H -i "$file" -w cat -j 2 -o - --no-checkpoint \
            | wc -l >"$OUT/mem-$mb.count"
        rows+=("| $mb MB | $(($(wc -l <"$file") - 1)) | $(cat "$OUT/mem-$mb.count") | $(awk -F': ' '/Maximum resident/ {printf "%.1f", $2 / 1024}' "$OUT/mem-$mb.txt") | $(awk -F': ' '/Elapsed/ {print $2}' "$OUT/mem-$mb.txt") |")
    done
    echo
    echo "### Peak memory, herdsman -w cat -j 2 (bounded memory: RSS should not grow with input)"
    echo
    echo "| Input | Rows | Output lines | Peak RSS [MB] | Elapsed |"
    echo "|:---|---:|---:|---:|---:|"
    printf '%s\n' "${rows[@]}"
}

(($#)) || set -- all
for what in "$@"; do
    case $what in
        primes) primes ;;
        overhead) overhead ;;
        exec) exec_bench ;;
        checkpoint) checkpoint ;;
        memory) memory ;;
        resume) resume ;;
        baselines) primes_baselines; exec_baselines ;;
        all) primes; overhead; exec_bench; checkpoint ;;
        *) sed -n '2,22p' "$0" >&2; exit 2 ;;
    esac
done

#!/usr/bin/env bash
# herdsman serving a plain Python function (python -m herdsman_worker) against the Python
# process pools people use today, side by side in one run, on the reference workload.
#
# usage (from the repository root):
#   cargo build --release -p herdsman-cli --bin herdsman
#   bench/python_workers.sh
#
# What it does, all under a temporary directory removed at the end:
#   1. writes the input: examples/primes/generate.py 20000 --seed 1 --bad-every 1000
#      (20,000 rows id,value with values 0..1000, 20 of them not integers);
#   2. makes a venv and pip-installs joblib, mpire and ./python (herdsman_worker) into it:
#      every contender runs that venv's python, the same interpreter;
#   3. tunes the chunk size of multiprocessing.Pool and ProcessPoolExecutor (one run per
#      candidate, the fastest wins);
#   4. runs every contender WARMUP times untimed (default 1), then times each RUNS times
#      (default 7, one per contender so each runs in every position of the rotating
#      round-robin once), whole command, wall-clock and CPU time, and prints a markdown table of medians (bench/interleave.py); then
#      checks that every contender wrote the same output lines and the same number of
#      failures.
#
# Contenders, 2 processes each (one process for the last): herdsman -j 2 with
# `python -m herdsman_worker primes:compute` (checkpointing on, as by default, and with
# --no-checkpoint), multiprocessing.Pool(2), concurrent.futures.ProcessPoolExecutor(2),
# joblib Parallel(n_jobs=2), mpire WorkerPool(2), one plain process, and the floor: the rows
# split into 2 interleaved shares beforehand, one forked process each, nothing exchanged until
# a share is done (what no tool that coordinates its processes can beat by much).
#
# Environment: RUNS (7), WARMUP (1), ROWS (20000), MAX_VALUE (1000), JOBS (2), HERDSMAN
# (target/release/herdsman; CARGO_TARGET_DIR is honoured), PYTHON (python3), CHUNKS (the
# candidate chunk sizes, "64 256 1024 2500"), KEEP=1 keeps the temporary directory,
# WORK=none (every contender runs a copy of primes.py whose compute() counts no primes and
# answers 0: what remains is each contender's own cost of moving 20,000 rows through its
# processes, interpreter start-ups included), BASELINE (another herdsman binary, for example a copy of an earlier build: it then runs
# too, with checkpointing, in the same rounds, and its output is checked like the others).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=${RUNS:-7}
WARMUP=${WARMUP:-1}
ROWS=${ROWS:-20000}
MAX_VALUE=${MAX_VALUE:-1000}
JOBS=${JOBS:-2}
TARGET=${CARGO_TARGET_DIR:-target}
HERDSMAN=${HERDSMAN:-$TARGET/release/herdsman}
PYTHON=${PYTHON:-python3}
CHUNKS=${CHUNKS:-64 256 1024 2500}

if [[ ! -x $HERDSMAN ]]; then
    echo "missing $HERDSMAN: run 'cargo build --release -p herdsman-cli --bin herdsman' first (or set HERDSMAN)" >&2
    exit 2
fi
HERDSMAN=$(cd "$(dirname "$HERDSMAN")" && pwd)/$(basename "$HERDSMAN")
BASELINE=${BASELINE:-}
if [[ -n $BASELINE && ! -x $BASELINE ]]; then
    echo "BASELINE=$BASELINE is not an executable herdsman binary; unset it or give the path of an earlier build" >&2
    exit 2
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/herdsman-pybench.XXXXXX")
if [[ -z ${KEEP:-} ]]; then
    trap 'rm -rf "$TMP"' EXIT
else
    echo "keeping $TMP" >&2
fi

echo "== input: $ROWS rows, values 0..$MAX_VALUE, seed 1" >&2
CSV=$TMP/primes.csv
"$PYTHON" examples/primes/generate.py "$ROWS" --seed 1 --max-value "$MAX_VALUE" \
    --bad-every 1000 >"$CSV"
BAD=$((ROWS / 1000))
OK=$((ROWS - BAD))

echo "== venv with joblib, mpire and herdsman_worker" >&2
"$PYTHON" -m venv "$TMP/venv"
VPY=$TMP/venv/bin/python
"$VPY" -m pip install -q --disable-pip-version-check joblib mpire ./python >&2
# The function lives in examples/primes/primes.py; every contender imports it from there.
export PYTHONPATH=$ROOT/examples/primes
if [[ ${WORK:-} == none ]]; then
    # The same module with the prime counting taken out: only the contenders' own cost is left.
    mkdir -p "$TMP/nowork"
    sed 's/"primes_up_to_value": count_primes(value)}/"primes_up_to_value": 0}/' \
        examples/primes/primes.py >"$TMP/nowork/primes.py"
    grep -q '"primes_up_to_value": 0}' "$TMP/nowork/primes.py" ||
        { echo "WORK=none: could not take the prime counting out of examples/primes/primes.py" >&2; exit 2; }
    export PYTHONPATH=$TMP/nowork
    echo "== WORK=none: compute() counts no primes" >&2
fi

POOLS="$VPY bench/python_pools.py"
IO="$CSV -j $JOBS"
out() { echo "-o $TMP/$1.jsonl --failures $TMP/$1.failures.jsonl"; }

# tune MODE: the chunk size from $CHUNKS with the shortest single run.
tune() {
    local mode=$1 best="" best_t="" k t0 t
    for k in $CHUNKS; do
        t0=${EPOCHREALTIME/./}
        $POOLS "$mode" $IO --chunksize "$k" $(out "tune") 2>/dev/null
        t=$((${EPOCHREALTIME/./} - t0))
        echo "   $mode chunksize $k: $((t / 1000)) ms" >&2
        if [[ -z $best_t ]] || ((t < best_t)); then best=$k best_t=$t; fi
    done
    echo "$best"
}
echo "== tuning chunk sizes ($CHUNKS)" >&2
MP_CHUNK=$(tune mp)
FUT_CHUNK=$(tune futures)
echo "   chosen: multiprocessing.Pool $MP_CHUNK, ProcessPoolExecutor $FUT_CHUNK" >&2

H="$HERDSMAN run --progress none -q -i $CSV --protocol framed -j $JOBS"
WORKER="$VPY -m herdsman_worker primes:compute"

echo "== machine" >&2
MACHINE="$(nproc) cores ($(lscpu 2>/dev/null | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}')), $("$VPY" --version 2>&1), load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "   $MACHINE" >&2

JSON=$TMP/python_workers.json
TABLE=$TMP/table.md
EXTRA=()
CHECKED="h hnc mp futures joblib mpire split"
if [[ -n $BASELINE ]]; then
    B="$BASELINE run --progress none -q -i $CSV --protocol framed -j $JOBS"
    EXTRA=(-n "baseline build: herdsman -j $JOBS + python -m herdsman_worker" \
        "$B -w '$WORKER' --state $TMP/state $(out base)")
    CHECKED="$CHECKED base"
fi
"$PYTHON" bench/interleave.py --runs "$RUNS" --warmup "$WARMUP" --prepare "rm -rf $TMP/state" --export-json "$JSON" \
    --records "$ROWS" \
    -n "herdsman -j $JOBS + python -m herdsman_worker" "$H -w '$WORKER' --state $TMP/state $(out h)" \
    -n "herdsman -j $JOBS + python -m herdsman_worker, --no-checkpoint" "$H -w '$WORKER' --no-checkpoint $(out hnc)" \
    -n "multiprocessing.Pool($JOBS).imap, chunksize $MP_CHUNK" "$POOLS mp $IO --chunksize $MP_CHUNK $(out mp)" \
    -n "ProcessPoolExecutor($JOBS).map, chunksize $FUT_CHUNK" "$POOLS futures $IO --chunksize $FUT_CHUNK $(out futures)" \
    -n "joblib Parallel(n_jobs=$JOBS), batch_size auto" "$POOLS joblib $IO $(out joblib)" \
    -n "mpire WorkerPool($JOBS)" "$POOLS mpire $IO $(out mpire)" \
    -n "one Python process" "$POOLS seq $IO $(out seq)" \
    -n "the floor: $JOBS forked processes, rows split beforehand, no exchange" "$POOLS split $IO $(out split)" \
    "${EXTRA[@]}" >"$TABLE"
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# Every contender must have written the same records: a fast wrong answer does not count.
status=0
for name in $CHECKED; do
    if ! cmp -s "$TMP/$name.jsonl" "$TMP/seq.jsonl"; then
        echo "CHECK FAILED: $name.jsonl differs from the single process's output" >&2
        status=1
    fi
    got=$(wc -l <"$TMP/$name.failures.jsonl")
    if [[ $got -ne $BAD ]]; then
        echo "CHECK FAILED: $name wrote $got failures, expected $BAD" >&2
        status=1
    fi
done
[[ $(wc -l <"$TMP/seq.jsonl") -eq $OK ]] || { echo "CHECK FAILED: seq.jsonl is not $OK lines" >&2; status=1; }

echo
echo "### Reference workload${WORK:+ (WORK=$WORK)}, $ROWS rows (values 0..$MAX_VALUE), $JOBS processes, $RUNS runs each"
echo
echo "Machine: $MACHINE; after: $LOAD_AFTER."
echo
cat "$TABLE"
echo
"$PYTHON" - "$JSON" <<'EOF'
import json, os, statistics, sys
results = json.load(open(sys.argv[1]))["results"]
herdsman = [r for r in results if r["command"].startswith("herdsman")][0]  # checkpointing on
pools = [r for r in results if not r["command"].startswith(("herdsman", "baseline", "the floor"))
         and "one Python" not in r["command"]]
floor = [r for r in results if r["command"].startswith("the floor")][0]
for key, what in (("median", "wall-clock"), ("cpu_median", "CPU")):
    best = min(pools, key=lambda r: r[key])
    ratio = best[key] / herdsman[key]
    print(f"- {what}: fastest pool {best['command']} {best[key]:.3f} s, herdsman (checkpointing) "
          f"{herdsman[key]:.3f} s: herdsman {ratio:.2f}x as fast (goal 1.10x: "
          f"{'met' if ratio >= 1.10 else 'not met'}).")
    print(f"  The floor (no coordination at all) {floor[key]:.3f} s: {best[key] / floor[key]:.2f}x "
          f"the fastest pool, {herdsman[key] / floor[key]:.2f}x herdsman's time.")
    # The same ratios round by round (the contenders of a round ran minutes apart at most),
    # which a drift of the machine's speed over the whole run moves less.
    runs = "times" if key == "median" else "cpu_times"
    def per_round(a, b):
        return statistics.median(x / y for x, y in zip(a[runs], b[runs]))
    print(f"  Median of the per-round ratios: herdsman {per_round(best, herdsman):.2f}x the fastest "
          f"pool, the floor {per_round(best, floor):.2f}x the fastest pool.")
# Core use: CPU time over the cores times the wall time, round by round (how busy each
# contender kept the machine's cores).
cores = os.cpu_count() or 1
print("- core use (median of the rounds): " + "; ".join(
    f"{r['command']} {statistics.median(c / (cores * w) for c, w in zip(r['cpu_times'], r['times'])):.3f}"
    for r in results) + ".")
base = [r for r in results if r["command"].startswith("baseline")]
for r in base:
    print(f"- against the baseline build: wall-clock {r['median']:.3f} s -> {herdsman['median']:.3f} s, "
          f"CPU {r['cpu_median']:.3f} s -> {herdsman['cpu_median']:.3f} s.")
EOF
[[ $status -eq 0 ]] && echo "Output checks passed: every contender wrote the single process's $OK lines, byte for byte, and $BAD failures."
exit $status

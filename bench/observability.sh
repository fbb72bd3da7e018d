#!/usr/bin/env bash
# What observability costs: the per-record overhead run (1,000,000 narrow CSV rows through
# `cat`, 2 workers, no checkpoint) with everything off, with Prometheus metrics served
# (--metrics-addr 127.0.0.1:0), with the job log, with JSON logs at -v, and with all of them,
# side by side: round k runs every variant once, all off first, before round k+1 starts
# (bench/interleave.py), so a change of load on a shared machine falls on every variant alike,
# and each variant's cost is read as the median of its per-round ratios to that round's
# "all off" run (paired, which a load that drifts over the minutes does not bias).
#
# usage (from the repository root):
#   cargo build --release -p herdsman-cli --bin herdsman
#   bench/observability.sh                     # every variant, RUNS=9 rounds
#   VARIANTS=joblog bench/observability.sh     # all off and the job log only, in pairs
#   INSTRUCTIONS=1 bench/observability.sh      # and instructions per thread (callgrind)
#
# Settings via environment: RUNS (9), ROWS (1000000), VARIANTS (any of "metrics joblog json
# all"; all four by default), INSTRUCTIONS (0; 1 also counts the instructions of herdsman
# itself, thread by thread, under `valgrind --tool=callgrind --separate-threads=yes` on
# CG_ROWS (100000) rows of the same input, CG_RUNS (3) interleaved runs of each variant),
# HERDSMAN (target/release/herdsman). CARGO_TARGET_DIR is honoured. Everything is generated
# into bench/out/. Prints `uptime` before and after, then markdown tables: medians of the
# wall-clock and CPU times (user + system of herdsman and its workers) and the medians of the
# per-round ratios to all off; with INSTRUCTIONS=1, the median instruction counts of the main
# thread (which resolves records and writes the output), the engine's thread, the job log's
# thread, the input's parser, the engine's input puller and the rest (worker I/O threads,
# start-up), and the ratios of the totals.
set -euo pipefail

cd "$(dirname "$0")/.."
RUNS=${RUNS:-9}
ROWS=${ROWS:-1000000}
VARIANTS=${VARIANTS:-metrics joblog json all}
INSTRUCTIONS=${INSTRUCTIONS:-0}
CG_ROWS=${CG_ROWS:-100000}
CG_RUNS=${CG_RUNS:-3}
TARGET=${CARGO_TARGET_DIR:-target}
HERDSMAN=${HERDSMAN:-$TARGET/release/herdsman}
OUT=bench/out
mkdir -p "$OUT"

[[ -x $HERDSMAN ]] || {
    echo "missing $HERDSMAN: run 'cargo build --release -p herdsman-cli --bin herdsman' first" >&2
    exit 2
}

generate() { # generate PATH ROWS
    [[ -s $1 ]] && return
    echo "generating $1 ($2 rows)" >&2
    python3 - "$1" "$2" <<'PY'
import sys
path, rows = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    f.write("id,value\n")
    for i in range(rows):
        f.write(f"{i},{i * 3}\n")
PY
}

# The variants as interleave.py arguments: name, then the flags added to the base command
# (`{o}` is the variant's file prefix).
variant_args() { # variant_args BASE PREFIX
    local b=$1 o=$2
    printf '%s\0' -n "all off" "$b -o $o.off.jsonl"
    for v in $VARIANTS; do
        case $v in
        metrics) printf '%s\0' -n "metrics (--metrics-addr 127.0.0.1:0)" \
            "$b -o $o.metrics.jsonl --metrics-addr 127.0.0.1:0" ;;
        joblog) printf '%s\0' -n "job log (--joblog jobs.tsv)" \
            "$b -o $o.joblog.jsonl --joblog $o.jobs.tsv" ;;
        json) printf '%s\0' -n "JSON logs (--log-format json -v)" \
            "$b -o $o.json.jsonl --log-format json -v 2>$o.log.jsonl" ;;
        all) printf '%s\0' -n "all on" \
            "$b -o $o.all.jsonl --metrics-addr 127.0.0.1:0 --joblog $o.jobs-all.tsv --log-format json -v 2>$o.log-all.jsonl" ;;
        *) echo "unknown variant $v (VARIANTS takes metrics, joblog, json, all)" >&2; exit 2 ;;
        esac
    done
}

INPUT=$OUT/observability_$ROWS.csv
generate "$INPUT" "$ROWS"
B="$HERDSMAN run -i $INPUT -w cat -j 2 --no-checkpoint --progress none -q"
O=$OUT/observability
mapfile -d '' ARGS < <(variant_args "$B" "$O")
echo "before: $(uptime)"
python3 bench/interleave.py --runs "$RUNS" --records "$ROWS" \
    --prepare "rm -f $O.*" \
    --export-json "$OUT/observability.json" \
    "${ARGS[@]}" >&2
echo "after:  $(uptime)"
python3 - "$OUT/observability.json" "$RUNS" <<'PY'
import json, statistics, sys
results = json.load(open(sys.argv[1]))["results"]
base = results[0]
print()
print(f"Medians of {sys.argv[2]} interleaved rounds; the ratios are medians of the per-round "
      "ratios to that round's all-off run.")
print()
print("| Variant | wall [s] | CPU [s] | wall / all off | (per-round range) | CPU / all off |")
print("|:---|---:|---:|---:|---:|---:|")
for r in results:
    walls = [t / b for t, b in zip(r["times"], base["times"])]
    cpus = [t / b for t, b in zip(r["cpu_times"], base["cpu_times"])]
    print(f"| {r['command']} | {r['median']:.3f} | {r['cpu_median']:.3f} | "
          f"{statistics.median(walls):.3f} | {min(walls):.2f}–{max(walls):.2f} | "
          f"{statistics.median(cpus):.3f} |")
PY

[[ $INSTRUCTIONS == 1 ]] || exit 0
command -v valgrind >/dev/null || { echo "INSTRUCTIONS=1 needs valgrind" >&2; exit 2; }
CG_INPUT=$OUT/observability_$CG_ROWS.csv
generate "$CG_INPUT" "$CG_ROWS"
CG=$OUT/callgrind
rm -rf "$CG"
mkdir -p "$CG"
mapfile -d '' CG_ARGS < <(variant_args \
    "$HERDSMAN run -i $CG_INPUT -w cat -j 2 --no-checkpoint --progress none -q" "$O.cg")
echo "before: $(uptime)"
for ((k = 0; k < CG_RUNS; k++)); do
    for ((i = 0; i < ${#CG_ARGS[@]}; i += 3)); do
        rm -f "$O".cg.*
        bash -c "valgrind --tool=callgrind --separate-threads=yes --trace-children=no \
            --callgrind-out-file=$CG/$((i / 3)).$k.out ${CG_ARGS[i + 2]}" >/dev/null 2>&1 || true
    done
done
echo "after:  $(uptime)"
NAMES=()
for ((i = 0; i < ${#CG_ARGS[@]}; i += 3)); do NAMES+=("${CG_ARGS[i + 1]}"); done
python3 - "$CG" "$CG_RUNS" "$CG_ROWS" "${NAMES[@]}" <<'PY'
import glob, re, statistics, sys
cg, runs, rows, names = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
# A thread is named by a function only it runs (callgrind writes one file per thread).
# Checked in ORDER: the main thread's file names the input too (it opens it), the puller's
# the chunk reader it drives.
MARKS = [("main", "herdsman::main"), ("engine", "Engine<T,U,E>::run"),
         ("job log", "herdsman::joblog::JobLog::serve"),
         ("input", "herdsman_io::source::Source"), ("puller", "herdsman::feed::Puller")]
ORDER = ["job log", "engine", "main", "puller", "input"]
def threads(prefix):
    counts = {m: 0 for m, _ in MARKS}
    counts["other"] = 0
    for path in glob.glob(prefix + "*"):
        text = open(path, errors="replace").read()
        found = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
        if not found:
            continue
        marks = dict(MARKS)
        who = next((m for m in ORDER if marks[m] in text), "other")
        total = int(found.group(1))
        counts[who] += total
    return counts
table = []
for i, name in enumerate(names):
    per_run = [threads(f"{cg}/{i}.{k}.out") for k in range(runs)]
    table.append((name, {t: statistics.median(r[t] for r in per_run) for t in per_run[0]},
                  [sum(r.values()) for r in per_run]))
print()
print(f"Instructions of herdsman itself (not its workers), {rows:,} rows, medians of {runs} "
      "runs, in millions (per row in parentheses):")
print()
cols = [m for m, _ in MARKS] + ["other"]
print("| Variant | " + " | ".join(cols) + " | total | total / all off |")
print("|:---|" + "---:|" * (len(cols) + 2))
base = statistics.median(table[0][2])
for name, med, totals in table:
    total = statistics.median(totals)
    cells = " | ".join(f"{med[c] / 1e6:.1f} ({med[c] / rows:.0f})" for c in cols)
    print(f"| {name} | {cells} | {total / 1e6:.1f} | {total / base:.3f} |")
PY

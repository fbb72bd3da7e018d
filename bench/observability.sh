#!/usr/bin/env bash
# What observability costs: the per-record overhead run (1,000,000 narrow CSV rows through
# `cat`, 2 workers, no checkpoint) with everything off, with Prometheus metrics served
# (--metrics-addr 127.0.0.1:0), with the job log, with JSON logs at -v, and with all of them,
# side by side: round k runs every variant once before round k+1 starts (bench/interleave.py),
# so a change of load on a shared machine falls on every variant alike.
#
# usage (from the repository root):
#   cargo build --release -p herdsman-cli --bin herdsman
#   bench/observability.sh
#
# Settings via environment: RUNS (5), ROWS (1000000), HERDSMAN (target/release/herdsman).
# CARGO_TARGET_DIR is honoured. Everything is generated into bench/out/. Prints a markdown
# table of medians (wall-clock and CPU time of herdsman and its workers) and the ratios to
# "all off"; on a loaded machine read the CPU column.
set -euo pipefail

cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
ROWS=${ROWS:-1000000}
TARGET=${CARGO_TARGET_DIR:-target}
HERDSMAN=${HERDSMAN:-$TARGET/release/herdsman}
OUT=bench/out
mkdir -p "$OUT"

[[ -x $HERDSMAN ]] || {
    echo "missing $HERDSMAN: run 'cargo build --release -p herdsman-cli --bin herdsman' first" >&2
    exit 2
}

INPUT=$OUT/observability_$ROWS.csv
if [[ ! -s $INPUT ]]; then
    echo "generating $INPUT ($ROWS rows)" >&2
    python3 - "$INPUT" "$ROWS" <<'PY'
import sys
path, rows = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    f.write("id,value\n")
    for i in range(rows):
        f.write(f"{i},{i * 3}\n")
PY
fi

B="$HERDSMAN run -i $INPUT -w cat -j 2 --no-checkpoint --progress none -q"
O=$OUT/observability
uptime >&2
python3 bench/interleave.py --runs "$RUNS" --records "$ROWS" \
    --prepare "rm -f $O.*" \
    --export-json "$OUT/observability.json" \
    -n "all off" "$B -o $O.off.jsonl" \
    -n "metrics (--metrics-addr 127.0.0.1:0)" "$B -o $O.metrics.jsonl --metrics-addr 127.0.0.1:0" \
    -n "job log (--joblog jobs.tsv)" "$B -o $O.joblog.jsonl --joblog $O.jobs.tsv" \
    -n "JSON logs (--log-format json -v)" "$B -o $O.json.jsonl --log-format json -v 2>$O.log.jsonl" \
    -n "all on" "$B -o $O.all.jsonl --metrics-addr 127.0.0.1:0 --joblog $O.jobs-all.tsv --log-format json -v 2>$O.log-all.jsonl"
uptime >&2
python3 - "$OUT/observability.json" <<'PY'
import json, sys
results = json.load(open(sys.argv[1]))["results"]
base = results[0]
print()
print("| Variant | wall / all off | CPU / all off |")
print("|:---|---:|---:|")
for r in results:
    print(f"| {r['command']} | {r['median'] / base['median']:.3f} | "
          f"{r['cpu_median'] / base['cpu_median']:.3f} |")
PY

#!/usr/bin/env bash
# What the run's history costs: 1M narrow CSV rows through `cat` (two workers), checkpointed
# (history is kept only with a checkpoint), with history on against --no-history,
# interleaved round-robin (bench/interleave.py), medians of RUNS (default 5).
#
# usage (from the repository root):
#   cargo build --release -p herdsman-cli
#   bench/history_cost.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
ROWS=${ROWS:-1000000}
HERDSMAN=${HERDSMAN:-${CARGO_TARGET_DIR:-target}/release/herdsman}
OUT=${OUT:-bench/out/history}
mkdir -p "$OUT"
csv="$OUT/narrow_$ROWS.csv"
[[ -f $csv ]] || python3 -c "
import sys
w = sys.stdout.write
w('id,value\n')
for i in range($ROWS):
    w(f'{i},{i * 3}\n')
" >"$csv"
run="$HERDSMAN run --progress none -q -i $csv -w cat -j 2"
uptime >&2
python3 bench/interleave.py --runs "$RUNS" --records "$ROWS" \
    --prepare "rm -rf $OUT/on.jsonl $OUT/off.jsonl $OUT/.on.jsonl.herdsman $OUT/.off.jsonl.herdsman" \
    --export-json "$OUT/history_cost.json" \
    -n "history on" "$run -o $OUT/on.jsonl" \
    -n "history off" "$run --no-history -o $OUT/off.jsonl"
uptime >&2

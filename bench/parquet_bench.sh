#!/usr/bin/env bash
# Parquet in, `cat` as the worker, Parquet out, side by side with pyarrow reading and
# writing the same file with no worker at all (the floor: one library call each way).
#
# usage (from the repository root, pyarrow installed):
#   cargo build --release -p herdsman-cli --bin herdsman
#   bench/parquet_bench.sh
#
# Generates bench/out/rows.parquet (PQ_ROWS rows, default 1,000,000: id int64, name string,
# value double, at timestamp[us, tz=UTC], tags list<string>; row groups of 100,000 rows,
# zstd), then times RUNS (default 3) runs of each command and prints a markdown table of the
# medians (hyperfine when installed, bench/timeit.py otherwise). Settings via environment:
# RUNS, PQ_ROWS, HERDSMAN (target/release/herdsman), CARGO_TARGET_DIR is honoured.
set -euo pipefail

cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
PQ_ROWS=${PQ_ROWS:-1000000}
TARGET=${CARGO_TARGET_DIR:-target}
HERDSMAN=${HERDSMAN:-$TARGET/release/herdsman}
OUT=bench/out
mkdir -p "$OUT"

python3 - "$OUT/rows.parquet" "$PQ_ROWS" <<'PY'
import datetime as dt, sys
import pyarrow as pa, pyarrow.parquet as pq
path, n = sys.argv[1], int(sys.argv[2])
base = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
ids = pa.array(range(n), pa.int64())
table = pa.table({
    "id": ids,
    "name": pa.array([f"name-{i % 1000}" for i in range(n)]),
    "value": pa.array([i * 0.25 for i in range(n)]),
    "at": pa.array([base + dt.timedelta(seconds=i) for i in range(n)], pa.timestamp("us", tz="UTC")),
    "tags": pa.array([["a", "b"][: i % 3] for i in range(n)], pa.list_(pa.string())),
})
pq.write_table(table, path, row_group_size=100_000, compression="zstd")
print(f"{path}: {n} rows, {pq.ParquetFile(path).metadata.num_row_groups} row groups", file=sys.stderr)
PY

IN=$OUT/rows.parquet
# The input's schema as pyarrow prints it: herdsman writes the same types (inferred, the
# timestamp would be a string).
python3 -c "import pyarrow.parquet as pq; print(pq.read_schema('$IN'))" > "$OUT/schema.txt"
PREP="rm -rf $OUT/pq_out.parquet $OUT/.pq_out.parquet.herdsman $OUT/pq_out.failures.jsonl"
HM="$HERDSMAN run -i $IN -w cat -j 2 -o $OUT/pq_out.parquet --schema $OUT/schema.txt --progress none -q"
CMDS=(
    "herdsman -w cat, chunks of 10000 (row groups of 10000)" "$HM --chunk-size 10000"
    "herdsman -w cat, default chunks of 1000" "$HM"
    "herdsman -w cat, chunks of 10000, --no-checkpoint" "$HM --chunk-size 10000 --no-checkpoint"
    "pyarrow read_table + write_table (no worker)" "python3 -c \"import pyarrow.parquet as pq; pq.write_table(pq.read_table('$IN'), '$OUT/pq_out.parquet', compression='zstd')\""
)
JSON=$OUT/parquet_bench.json
if command -v hyperfine >/dev/null; then
    args=()
    for ((i = 0; i < ${#CMDS[@]}; i += 2)); do args+=(-n "${CMDS[i]}" "${CMDS[i+1]}"); done
    hyperfine -N --runs "$RUNS" --prepare "$PREP" --export-json "$JSON" "${args[@]}"
else
    args=()
    for ((i = 0; i < ${#CMDS[@]}; i += 2)); do args+=(-n "${CMDS[i]}" "${CMDS[i+1]}"); done
    python3 bench/timeit.py run --runs "$RUNS" --prepare "$PREP" --export-json "$JSON" "${args[@]}"
fi
python3 bench/timeit.py table "$JSON" --records "$PQ_ROWS"

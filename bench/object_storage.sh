#!/usr/bin/env bash
# Reading from object storage against reading from local disk: a 1 M-row JSONL through `cat`
# as the worker, once from a local S3-compatible server (moto in server mode, started here on
# a free port) and once from the same file on disk, side by side, medians of RUNS (3) runs.
#
# usage (from the repository root):
#   cargo build --release -p herdsman-cli --bin herdsman
#   pip install 'moto[server]'
#   bench/object_storage.sh
#
# moto is a Python mock of S3, not S3: it shows herdsman's own cost of ranged GETs and of
# staying streaming, not the throughput of a real bucket (which is usually network-bound).
# Settings via environment: RUNS (3), ROWS (1000000), HERDSMAN (target/release/herdsman).
# CARGO_TARGET_DIR is honoured. Everything is generated into bench/out/.
set -euo pipefail

cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
ROWS=${ROWS:-1000000}
TARGET=${CARGO_TARGET_DIR:-target}
HERDSMAN=$(realpath "${HERDSMAN:-$TARGET/release/herdsman}")
OUT=bench/out/object_storage
mkdir -p "$OUT"
[[ -x $HERDSMAN ]] || { echo "missing $HERDSMAN: run 'cargo build --release -p herdsman-cli --bin herdsman' first" >&2; exit 2; }

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m moto.server -H 127.0.0.1 -p "$PORT" >"$OUT/moto.log" 2>&1 &
MOTO=$!
trap 'kill $MOTO 2>/dev/null || true' EXIT
export AWS_ENDPOINT_URL=http://127.0.0.1:$PORT AWS_ALLOW_HTTP=true AWS_ACCESS_KEY_ID=testing \
    AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
for _ in $(seq 600); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1',$PORT))" 2>/dev/null && break
    sleep 0.1
done

IN=$OUT/in.jsonl
[[ -s $IN ]] || python3 -c "
import sys
w = sys.stdout.write
for i in range($ROWS):
    w('{\"id\":%d,\"name\":\"record %d\",\"value\":%d}\n' % (i, i, i * 7 % 1000))
" >"$IN"
python3 -c "
import boto3
s3 = boto3.client('s3')
s3.create_bucket(Bucket='bench')
s3.upload_file('$IN', 'bench', 'in.jsonl')
"
echo "input: $(wc -l <"$IN") rows, $(du -h "$IN" | cut -f1)" >&2

H="$HERDSMAN run --progress none -q -w cat --no-checkpoint"
python3 bench/timeit.py run --runs "$RUNS" --export-json "$OUT/read.json" \
    --prepare "rm -f $OUT/local.jsonl $OUT/s3.jsonl" \
    -n "local disk" "$H -i $IN -o $OUT/local.jsonl" \
    -n "moto (s3://)" "$H -i s3://bench/in.jsonl -o $OUT/s3.jsonl"
# Each timed round removes both outputs first: write them once more to compare them.
$H -i "$IN" -o "$OUT/local.jsonl"
$H -i s3://bench/in.jsonl -o "$OUT/s3.jsonl"
cmp "$OUT/local.jsonl" "$OUT/s3.jsonl" && echo "outputs identical" >&2
python3 bench/timeit.py table "$OUT/read.json" --records "$ROWS"

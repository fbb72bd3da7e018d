#!/usr/bin/env bash
# Database output: ROWS rows (default 1,000,000) into PostgreSQL through herdsman with no worker
# (`--copy`, a load) and with `cat` as the worker (each chunk's rows and its marker in one
# transaction), against `psql \copy` of the same CSV into the same table shape, side by side,
# RUNS rounds (default 5), medians; and
# the same herdsman run writing a JSONL file instead (the pipeline's own floor on this machine).
#
# usage (from the repository root):
#   bench/db_output.sh [URL]
#
# Without URL a throwaway server is started (Debian's postgresql package, durable: fsync on,
# PostgreSQL's defaults) in a temporary directory and stopped at the end. With URL the tables
# herdsman_bench_copy and herdsman_bench_herdsman are dropped and created in that database.
# CHUNK sets herdsman's --chunk-size (default 1000, herdsman's default).
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-1000000}
RUNS=${RUNS:-5}
CHUNK=${CHUNK:-1000}
target=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p herdsman-cli
H="$(pwd)/$target/release/herdsman"
[ -x "$H" ] || H="$target/release/herdsman"
work=$(mktemp -d)
server=""
cleanup() {
    if [ -n "$server" ]; then as_pg "$bin/pg_ctl" -D "$work/pg/data" stop -m fast -w >/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
URL=${1:-}
if [ -z "$URL" ]; then
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    mkdir -p "$work/pg"
    [ "$(id -u)" = 0 ] && chown postgres "$work/pg" && chmod 755 "$work"
    as_pg "$bin/initdb" -D "$work/pg/data" --auth=trust -U postgres -E UTF8 --locale=C >/dev/null
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    printf "port = %s\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\n" \
        "$port" "$work/pg" | as_pg tee -a "$work/pg/data/postgresql.auto.conf" >/dev/null
    as_pg "$bin/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" start -w >/dev/null
    server=1
    URL="postgres://postgres@127.0.0.1:$port/postgres"
fi
python3 - "$ROWS" > "$work/rows.csv" <<'PY'
import random, sys
random.seed(7)
w = sys.stdout.write
w("id,value,name\n")
for i in range(int(sys.argv[1])):
    w(f"{i},{random.randrange(1_000_000)},name-{i}\n")
PY
cat > "$work/copy.sh" <<SH
psql -X -q -v ON_ERROR_STOP=1 "$URL" -c 'DROP TABLE IF EXISTS herdsman_bench_copy' \
  -c 'CREATE TABLE herdsman_bench_copy (id BIGINT, name TEXT, value BIGINT)'
psql -X -q -v ON_ERROR_STOP=1 "$URL" -c "\\copy herdsman_bench_copy (id, value, name) FROM '$work/rows.csv' CSV HEADER"
SH
cat > "$work/herdsman.sh" <<SH
cd "$work" && rm -rf herdsman-state herdsman_bench_herdsman.failures.jsonl
psql -X -q -v ON_ERROR_STOP=1 "$URL" -c 'DROP TABLE IF EXISTS herdsman_bench_herdsman' -c 'DROP TABLE IF EXISTS herdsman_chunks'
"$H" run -i rows.csv --infer-types -w cat -j 2 --chunk-size $CHUNK --progress none -q \
  -o "$URL?table=herdsman_bench_herdsman"
SH
cat > "$work/copy_load.sh" <<SH
cd "$work" && rm -rf herdsman-state herdsman_bench_load.failures.jsonl
psql -X -q -v ON_ERROR_STOP=1 "$URL" -c 'DROP TABLE IF EXISTS herdsman_bench_load' -c 'DROP TABLE IF EXISTS herdsman_chunks'
"$H" run -i rows.csv --infer-types --copy --chunk-size $CHUNK --progress none -q \
  -o "$URL?table=herdsman_bench_load"
SH
cat > "$work/jsonl.sh" <<SH
cd "$work" && rm -rf .out.jsonl.herdsman out.jsonl out.failures.jsonl
"$H" run -i rows.csv --infer-types -w cat -j 2 --chunk-size $CHUNK --progress none -q -o out.jsonl
SH
python3 bench/timeit.py run --runs "$RUNS" --export-json "$work/db.json" \
    -n 'psql \copy' "sh $work/copy.sh" \
    -n "herdsman --copy (chunk $CHUNK)" "sh $work/copy_load.sh" \
    -n "herdsman -w cat -j 2 (chunk $CHUNK)" "sh $work/herdsman.sh" \
    -n "herdsman -o out.jsonl (chunk $CHUNK, floor)" "sh $work/jsonl.sh"
python3 bench/timeit.py table "$work/db.json" --records "$ROWS"
for t in herdsman_bench_copy herdsman_bench_load herdsman_bench_herdsman; do
    psql -X -At "$URL" -c "SELECT '$t', count(*), count(DISTINCT id) FROM $t"
done

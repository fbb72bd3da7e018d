#!/usr/bin/env bash
# Database input: the same rows read from SQLite, from PostgreSQL and from a JSONL file, each
# through `cat` as the worker into a JSONL output, side by side.
#
# usage (from the repository root):
#   cargo build --release -p herdsman-cli --bin herdsman
#   bench/db_input_bench.sh [POSTGRES_URL]
#
# Generates DB_ROWS rows (default 1,000,000: id bigint primary key, name text, value double)
# as bench/out/rows.jsonl, bench/out/rows.sqlite (table `rows`) and a PostgreSQL table
# `bench_rows` (loaded with psql's \copy), then times RUNS (default 3) runs of each command
# and prints a markdown table of the medians (hyperfine when installed, bench/timeit.py
# otherwise). Without POSTGRES_URL a throwaway server is started (Debian's postgresql
# package, /usr/lib/postgresql/*/bin, or HERDSMAN_PG_BIN) in a temporary directory, with
# PostgreSQL's default settings, and stopped at the end. Settings via environment: RUNS,
# DB_ROWS, HERDSMAN (target/release/herdsman), CARGO_TARGET_DIR is honoured.
set -euo pipefail

cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
DB_ROWS=${DB_ROWS:-1000000}
TARGET=${CARGO_TARGET_DIR:-target}
HERDSMAN=${HERDSMAN:-$TARGET/release/herdsman}
OUT=bench/out
mkdir -p "$OUT"
URL=${1:-}

PGBIN=${HERDSMAN_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
if [ -z "$URL" ]; then
    PGDIR=$(mktemp -d /tmp/herdsman-bench-pg.XXXXXX)
    as_pg=()
    if [ "$(id -u)" = 0 ]; then
        chown postgres "$PGDIR"
        as_pg=(runuser -u postgres --)
    fi
    PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "${as_pg[@]}" "$PGBIN/initdb" -D "$PGDIR/data" --auth=trust -U postgres >/dev/null
    "${as_pg[@]}" "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/log" -w \
        -o "-p $PORT -k $PGDIR -c listen_addresses=127.0.0.1" start >/dev/null
    trap '"${as_pg[@]}" "$PGBIN/pg_ctl" -D "$PGDIR/data" -m fast stop >/dev/null; rm -rf "$PGDIR"' EXIT
    URL="postgres://postgres@127.0.0.1:$PORT/postgres"
fi
PSQL=${PSQL:-$(command -v psql || echo "$PGBIN/psql")}

# The rows: a CSV for PostgreSQL's \copy, the same rows as JSONL and in SQLite.
python3 - "$OUT" "$DB_ROWS" <<'PY'
import json, os, sqlite3, sys
out, n = sys.argv[1], int(sys.argv[2])
rows = [(i, f"name-{i % 1000}", i * 0.25) for i in range(n)]
with open(os.path.join(out, "rows.csv"), "w") as f:
    for r in rows:
        f.write(f"{r[0]},{r[1]},{r[2]!r}\n")
dumps = json.JSONEncoder(separators=(",", ":")).encode
with open(os.path.join(out, "rows.jsonl"), "w") as f:
    for r in rows:
        f.write(dumps({"id": r[0], "name": r[1], "value": r[2]}) + "\n")
path = os.path.join(out, "rows.sqlite")
if os.path.exists(path):
    os.remove(path)
db = sqlite3.connect(path)
db.execute("CREATE TABLE rows (id INTEGER PRIMARY KEY, name TEXT, value REAL)")
db.executemany("INSERT INTO rows VALUES (?, ?, ?)", rows)
db.commit()
print(f"{n} rows in {out}/rows.jsonl, rows.sqlite and rows.csv", file=sys.stderr)
PY
"$PSQL" -q "$URL" -c "DROP TABLE IF EXISTS bench_rows" \
    -c "CREATE TABLE bench_rows (id bigint PRIMARY KEY, name text, value double precision)" \
    -c "\\copy bench_rows FROM '$OUT/rows.csv' WITH (FORMAT csv)" -c "VACUUM ANALYZE bench_rows"

PREP="rm -rf $OUT/db_out.jsonl $OUT/.db_out.jsonl.herdsman $OUT/db_out.failures.jsonl"
HM="$HERDSMAN run -w cat -j 2 -o $OUT/db_out.jsonl --progress none -q"
CMDS=(
    "JSONL file -> cat" "$HM -i $OUT/rows.jsonl"
    "SQLite table -> cat" "$HM -i 'sqlite://$OUT/rows.sqlite?table=rows'"
    "PostgreSQL table -> cat" "$HM -i '$URL?table=bench_rows'"
)
JSON=$OUT/db_input_bench.json
args=()
for ((i = 0; i < ${#CMDS[@]}; i += 2)); do args+=(-n "${CMDS[i]}" "${CMDS[i+1]}"); done
if command -v hyperfine >/dev/null; then
    hyperfine -N --runs "$RUNS" --prepare "$PREP" --export-json "$JSON" "${args[@]}"
else
    python3 bench/timeit.py run --runs "$RUNS" --prepare "$PREP" --export-json "$JSON" "${args[@]}"
fi
python3 bench/timeit.py table "$JSON" --records "$DB_ROWS"

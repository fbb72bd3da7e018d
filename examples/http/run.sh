#!/usr/bin/env bash
# The I/O-bound example end to end: start server.py on a free port, run job.toml (look up
# every id of ids.csv at 15 requests/second, under the server's limit of 20, retrying
# throttled and unavailable calls), then stop the server and show its counts.
#
# usage: examples/http/run.sh [extra herdsman run flags...]
#   needs `herdsman` on PATH, or HERDSMAN=/path/to/herdsman (default: the release build).
#   The job's settings are in job.toml; a flag given here wins over the file, e.g.
#   `run.sh --rate 40/second` or `run.sh --restart`.
set -euo pipefail

cd "$(dirname "$0")"
HERDSMAN=${HERDSMAN:-$(command -v herdsman || echo ../../target/release/herdsman)}
mkdir -p out

python3 server.py 0 >out/server.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT

# server.py prints its address once it is listening.
for _ in $(seq 50); do
    url=$(sed -n 's/^listening on //p' out/server.log)
    [[ -n $url ]] && break
    sleep 0.1
done
[[ -n ${url:-} ]] || { echo "server.py did not start; see out/server.log" >&2; exit 1; }
echo "server at $url" >&2

status=0
# worker.py reads the server's address from LOOKUP_URL, so the job stays the same from one
# run to the next (a second run.sh resumes from the checkpoint; pass --restart to redo it).
LOOKUP_URL=$url "$HERDSMAN" run job.toml "$@" || status=$?

echo "server counts: $(python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1] + "/stats").read().decode())' "$url")" >&2
lines() { if [[ -f $1 ]]; then wc -l <"$1"; else echo 0; fi; }
echo "$(lines out/lookups.jsonl) lookups in out/lookups.jsonl, $(lines out/failures.jsonl) in out/failures.jsonl" >&2
exit $status

#!/usr/bin/env bash
# The PostgreSQL ledger alone: claims plus commits per second against a local PostgreSQL.
#
# usage (from the repository root):
#   bench/ledger_postgres.sh [URL]
#
# Plans CHUNKS chunks (default 10000), then 1 and 4 concurrent clients (threads, one
# connection each) claim and commit them (with one part name each) until none is left; RUNS
# rounds (default 3) of each. Without URL each round starts a throwaway server (Debian's
# postgresql package, /usr/lib/postgresql/*/bin) in a temporary directory, durable (fsync on,
# PostgreSQL's defaults) and then with fsync off (MODES="durable fast" by default), to tell
# the disk's cost from the ledger's. With URL the rounds run against that database (schema
# herdsman_bench, which is reset). Each chunk's commit claims the next in the same call, as a
# node does (CALLS=combined, the default); CALLS="combined separate" also measures a claim and
# a commit call per chunk.
set -euo pipefail
cd "$(dirname "$0")/.."
URL=${1:-}
CHUNKS=${CHUNKS:-10000}
RUNS=${RUNS:-3}
MODES=${MODES:-durable fast}
CLIENTS=${CLIENTS:-1 4}
CALLS=${CALLS:-combined}
target=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p herdsman-ledger-postgres --features test-support --example claim_rate
for mode in $MODES; do
    for calls in $CALLS; do
        for clients in $CLIENTS; do
            for _ in $(seq "$RUNS"); do
                "$target/release/examples/claim_rate" "$URL" "$CHUNKS" "$clients" "$mode" "$calls"
            done
        done
    done
done

#!/usr/bin/env bash
# Many nodes on one job through the PostgreSQL ledger (`herdsman run --ledger`).
#
# usage (from the repository root):
#   bench/distributed.sh [scaling|reference|ledger|all]
#
# scaling: 1, 2 and 4 nodes on this machine with an I/O-bound worker that sleeps 10 ms per
#          record, RECORDS records (default 4000), -j 4 per node, chunks of CHUNK records
#          (default 50); the time from the first node's start to the last node's exit
#          (output assembled and published), and the speed-up over one node. Twice: with
#          the Rust worker `crates/herdsman-worker/examples/sleep.rs` (it starts in about a
#          millisecond: herdsman's own scaling) and with a Python worker doing the same
#          (each node's interpreters start too).
# reference: one node with the PostgreSQL ledger against the SQLite default (one machine)
#          on the reference workload (20,000 rows, primes counted by the Python worker of
#          examples/primes, -j 2), RUNS rounds each (default 3), the order alternating;
#          every output compared with the first; the medians and the median of the
#          per-round ratios.
# ledger:  one node with the PostgreSQL ledger against the SQLite default (one machine),
#          `cat` over ROWS rows (default 1,000,000), RUNS rounds each (default 3), the
#          order alternating from round to round; prints each time, checks each output,
#          then the medians and the median of the per-round ratios.
#
# A throwaway PostgreSQL (Debian's postgresql package) runs in a temporary directory on a
# free port, as the postgres user when run as root, with PostgreSQL's defaults (fsync on).
set -euo pipefail
cd "$(dirname "$0")/.."
WHAT=${1:-all}
RECORDS=${RECORDS:-4000}
CHUNK=${CHUNK:-50}
ROWS=${ROWS:-1000000}
RUNS=${RUNS:-3}
target=${CARGO_TARGET_DIR:-target}
# No Parquet: the benchmark reads and writes text.
cargo build --release -q -p herdsman-cli --no-default-features
HERDSMAN=$(realpath "$target/release/herdsman")
cargo build --release -q -p herdsman-worker --example sleep
SLEEP_WORKER=$(realpath "$target/release/examples/sleep")

work=$(mktemp -d /tmp/herdsman-dist-bench.XXXXXX)
chmod 755 "$work"   # the postgres user reaches its data directory inside
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
pgdir="$work/pg"
mkdir -p "$pgdir"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$pgdir"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg "$pgbin/initdb" -D "$pgdir/data" --auth=trust -U postgres >/dev/null
as_pg "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/log" -w \
    -o "-p $port -c listen_addresses=127.0.0.1 -k $pgdir" start >/dev/null
trap 'as_pg "$pgbin/pg_ctl" -D "$pgdir/data" -m fast stop >/dev/null; rm -rf "$work"' EXIT
URL="postgres://postgres@127.0.0.1:$port/postgres"

# Bash's own clock: no process is started to read it (a `python3 -c` here added its own
# start-up, tens of milliseconds on a loaded machine, to every time).
now() { local t=$EPOCHREALTIME; echo "${t/,/.}"; }

if [ "$WHAT" = scaling ] || [ "$WHAT" = all ]; then
    cat > "$work/sleep10.py" <<'PY'
import sys, time
for line in sys.stdin:
    time.sleep(0.01)
    sys.stdout.write(line)
    sys.stdout.flush()
PY
    seq "$RECORDS" > "$work/in.txt"
    # scale NAME WORKER: the three runs with WORKER and the speed-ups.
    scale() {
        local name=$1 worker=$2 nodes n t0 t1 out p
        declare -A took
        for nodes in 1 2 4; do
            out="$work/out-$name-$nodes.txt"
            t0=$(now)
            pids=()
            for n in $(seq "$nodes"); do
                "$HERDSMAN" run -i "$work/in.txt" -w "$worker" -j 4 \
                    --chunk-size "$CHUNK" -o "$out" --ledger "$URL" --node "n$n" \
                    --progress none 2>/dev/null &
                pids+=($!)
            done
            for p in "${pids[@]}"; do wait "$p"; done
            t1=$(now)
            took[$nodes]=$(python3 -c "print($t1-$t0)")
            python3 -c "print(f'scaling ($name worker): $nodes node(s), $RECORDS records: {($t1-$t0):.2f} s')"
            cmp <(seq "$RECORDS") "$out"
        done
        python3 -c "print(f'scaling ($name worker): speed-up 1 -> 2 nodes {${took[1]}/${took[2]}:.2f}x, 1 -> 4 nodes {${took[1]}/${took[4]}:.2f}x (goal: 3.6x)')"
    }
    scale rust "$SLEEP_WORKER"
    scale python "python3 $work/sleep10.py"
fi

# One node with the PostgreSQL ledger against the SQLite default on one machine: RUNS rounds,
# the order alternating, each output compared with the first SQLite run's; then the medians
# and the median of the per-round ratios. Usage: compare_ledgers NAME INPUT RUN-ARGS...
compare_ledgers() {
    local name=$1 input=$2
    shift 2
    local times="$work/$name-times.txt" want="" out t0 t1 mode modes run
    : > "$times"
    for run in $(seq "$RUNS"); do
        # Alternate which goes first, so that a drift of the machine's load falls on both.
        modes="sqlite postgres"
        [ $((run % 2)) = 0 ] && modes="postgres sqlite"
        for mode in $modes; do
            # A job per round: a finished shared job is not run again.
            out="$work/$name-$mode-$run.txt"
            extra=()
            [ "$mode" = postgres ] && extra=(--ledger "$URL")
            t0=$(now)
            # Exit 1 (records failed, in the dead-letter file) is part of a workload.
            "$HERDSMAN" run -i "$input" "$@" -o "$out" --progress none \
                "${extra[@]}" 2>/dev/null || [ $? = 1 ]
            t1=$(now)
            echo "$run $mode $t0 $t1" >> "$times"
            python3 -c "print(f'$name: $mode: {($t1-$t0):.2f} s')"
            [ -n "$want" ] || want=$out
            cmp "$want" "$out"
        done
    done
    # Medians of each, and of the per-round ratio (paired: a load that drifts over the
    # minutes does not bias it).
    python3 - "$times" "$name" <<'PY'
import statistics, sys
rounds = {}
for line in open(sys.argv[1]):
    run, mode, t0, t1 = line.split()
    rounds.setdefault(run, {})[mode] = float(t1) - float(t0)
sq = [r["sqlite"] for r in rounds.values()]
pg = [r["postgres"] for r in rounds.values()]
ratios = [r["postgres"] / r["sqlite"] for r in rounds.values()]
print(f"{sys.argv[2]}: {len(rounds)} rounds, median SQLite {statistics.median(sq):.3f} s, "
      f"PostgreSQL {statistics.median(pg):.3f} s; PostgreSQL / SQLite per round: "
      f"median {statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f}); goal within 5%")
PY
}

if [ "$WHAT" = reference ] || [ "$WHAT" = all ]; then
    # The reference workload: 20,000 rows (values up to 1,000, a bad row every 1,000),
    # primes counted by the Python worker, 2 workers.
    python3 examples/primes/generate.py 20000 --seed 1 --bad-every 1000 > "$work/primes.csv"
    compare_ledgers reference "$work/primes.csv" \
        -w "python3 $(pwd)/examples/primes/worker.py" --protocol framed -j 2
fi

if [ "$WHAT" = ledger ] || [ "$WHAT" = all ]; then
    seq "$ROWS" > "$work/rows.txt"
    compare_ledgers ledger "$work/rows.txt" -w cat
    cmp "$work/rows.txt" "$work/ledger-sqlite-1.txt"
fi

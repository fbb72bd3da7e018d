#!/usr/bin/env python3
"""The reference workload on the Python process pools people use today, for side-by-side timing.

usage: python3 bench/python_pools.py MODE INPUT.csv -o OUT.jsonl --failures BAD.jsonl
                                     [-j JOBS] [--chunksize N]

MODE is one of
  mp       multiprocessing.Pool(JOBS).imap over the rows, --chunksize rows per task
  futures  concurrent.futures.ProcessPoolExecutor(JOBS).map, --chunksize rows per task
  joblib   joblib.Parallel(n_jobs=JOBS) with its automatic batch size
  mpire    mpire.WorkerPool(n_jobs=JOBS).imap with its default chunking
  seq      one process, no pool
  split    the floor: the rows cut into JOBS interleaved shares before any work, one forked
           process per share, nothing exchanged until a share is done (no pool, no queue,
           no balancing): what two processes cost with no coordination at all

Every mode runs the same function as the herdsman worker (examples/primes/primes.py's
`compute`), writes {"id":…,"value":…,"primes_up_to_value":…} lines in input order to OUT and
rows whose id or value is not an integer to BAD, and prints its counts to stderr. The whole
command is timed from outside, interpreter start-up and imports included, as herdsman is.
"""
import argparse
import csv
import json
import os
import sys

# Appended, not prepended: a `primes` module on PYTHONPATH wins (python_workers.sh WORK=none).
sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "primes"))
from primes import compute  # noqa: E402  (the function every contender runs)

dumps = json.JSONEncoder(separators=(",", ":")).encode


def process_row(row):
    try:
        return True, compute(row)
    except ValueError as err:
        return False, {"record": row, "error": f"ValueError: {err}"}


def split(fn, rows, jobs):
    """fn over rows in `jobs` forked processes, share k being rows[k::jobs]; each child
    pickles its share's results to a file once it is done, and the parent reads them back
    in input order. (bench/python_api/bench.py runs it too.)"""
    import pickle
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        children = []
        for k in range(jobs):
            path = os.path.join(tmp, str(k))
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    with open(path, "wb") as f:
                        pickle.dump([fn(row) for row in rows[k::jobs]], f, 5)
                    code = 0
                finally:
                    os._exit(code)
            children.append((pid, path))
        shares = []
        for pid, path in children:
            _, status = os.waitpid(pid, 0)
            if status != 0:
                raise SystemExit(f"split: the process of share {path} failed ({status})")
            with open(path, "rb") as f:
                shares.append(pickle.load(f))
    return [shares[i % jobs][i // jobs] for i in range(len(rows))]


def results(mode, rows, jobs, chunksize):
    if mode == "seq":
        return map(process_row, rows), None
    if mode == "split":
        return split(process_row, rows, jobs), None
    if mode == "mp":
        from multiprocessing import Pool

        pool = Pool(jobs)
        return pool.imap(process_row, rows, chunksize), pool.terminate
    if mode == "futures":
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(jobs)
        return pool.map(process_row, rows, chunksize=chunksize), pool.shutdown
    if mode == "joblib":
        from joblib import Parallel, delayed

        parallel = Parallel(n_jobs=jobs, return_as="generator")
        return parallel(delayed(process_row)(row) for row in rows), None
    if mode == "mpire":
        from mpire import WorkerPool

        pool = WorkerPool(n_jobs=jobs)
        # mpire unpacks dicts into keyword arguments: hand each row over in a 1-tuple.
        return pool.imap(process_row, [(row,) for row in rows]), pool.terminate
    raise SystemExit(f"unknown mode {mode!r}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["mp", "futures", "joblib", "mpire", "seq", "split"])
    parser.add_argument("input")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--failures", required=True)
    parser.add_argument("-j", "--jobs", type=int, default=2)
    parser.add_argument("--chunksize", type=int, default=256)
    args = parser.parse_args()

    with open(args.input, newline="", encoding="utf-8") as src:
        rows = list(csv.DictReader(src))
    ok = bad = 0
    outputs, close = results(args.mode, rows, args.jobs, args.chunksize)
    try:
        with open(args.output, "w", encoding="utf-8") as out, \
                open(args.failures, "w", encoding="utf-8") as failures:
            for success, value in outputs:
                if success:
                    out.write(dumps(value) + "\n")
                    ok += 1
                else:
                    failures.write(dumps(value) + "\n")
                    bad += 1
    finally:
        if close is not None:
            close()
    print(f"python_pools {args.mode}: {ok} ok, {bad} failed", file=sys.stderr)


if __name__ == "__main__":
    main()

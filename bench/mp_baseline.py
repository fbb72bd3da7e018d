#!/usr/bin/env python3
"""The baseline people run today: the reference workload on a multiprocessing.Pool.

usage: python3 bench/mp_baseline.py INPUT.csv [-o OUT.jsonl] [--failures BAD.jsonl]
                                    [-j JOBS] [--chunksize N]

Streams the CSV (columns id,value), maps rows over Pool(JOBS).imap in chunks, writes
{"id":…,"value":…,"primes_up_to_value":…} lines in input order to OUT and rows whose id or
value is not an integer to BAD as {"record":{…},"error":"…"}. Prints the elapsed time and
counts to stderr. No checkpoint, no retries: a crash means starting over.
"""
import argparse
import csv
import json
import os
import sys
import time
from multiprocessing import Pool

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "primes"))
from primes import compute  # noqa: E402  (the same function every worker runs)


def process_row(row: dict):
    try:
        return True, compute(row)
    except ValueError as err:
        return False, {"record": row, "error": str(err)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input")
    parser.add_argument("-o", "--output", default="mp_out.jsonl")
    parser.add_argument("--failures", default="mp_failures.jsonl")
    parser.add_argument("-j", "--jobs", type=int, default=2)
    parser.add_argument("--chunksize", type=int, default=256)
    args = parser.parse_args()

    start = time.perf_counter()
    ok = bad = 0
    with open(args.input, newline="", encoding="utf-8") as src, \
            open(args.output, "w", encoding="utf-8") as out, \
            open(args.failures, "w", encoding="utf-8") as failures, \
            Pool(args.jobs) as pool:
        for success, result in pool.imap(process_row, csv.DictReader(src), args.chunksize):
            if success:
                out.write(json.dumps(result, separators=(",", ":")) + "\n")
                ok += 1
            else:
                failures.write(json.dumps(result, separators=(",", ":")) + "\n")
                bad += 1
    elapsed = time.perf_counter() - start
    print(f"mp_baseline: {ok} ok, {bad} failed in {elapsed:.3f} s "
          f"({(ok + bad) / elapsed:,.0f} records/s)", file=sys.stderr)


if __name__ == "__main__":
    main()

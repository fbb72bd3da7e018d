#!/usr/bin/env python3
"""The reference workload in one plain Python process, for scale.

usage: python3 bench/primes_seq.py INPUT.csv [-o OUT.jsonl] [--failures BAD.jsonl]

Same output and failure files as bench/mp_baseline.py, without any parallelism. Prints the
elapsed time to stderr.
"""
import argparse
import csv
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "primes"))
from primes import compute  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input")
    parser.add_argument("-o", "--output", default="seq_out.jsonl")
    parser.add_argument("--failures", default="seq_failures.jsonl")
    args = parser.parse_args()

    start = time.perf_counter()
    ok = bad = 0
    with open(args.input, newline="", encoding="utf-8") as src, \
            open(args.output, "w", encoding="utf-8") as out, \
            open(args.failures, "w", encoding="utf-8") as failures:
        for row in csv.DictReader(src):
            try:
                out.write(json.dumps(compute(row), separators=(",", ":")) + "\n")
                ok += 1
            except ValueError as err:
                failures.write(json.dumps({"record": row, "error": str(err)}, separators=(",", ":")) + "\n")
                bad += 1
    elapsed = time.perf_counter() - start
    print(f"primes_seq: {ok} ok, {bad} failed in {elapsed:.3f} s", file=sys.stderr)


if __name__ == "__main__":
    main()

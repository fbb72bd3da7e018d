#!/usr/bin/env python3
"""Write the reference workload's CSV (columns id,value) to stdout.

usage: generate.py ROWS [--max-value N] [--seed S] [--bad-every K]

Values are uniform integers in 0..=max-value. With --bad-every K, every K-th row holds a
value that is not an integer, which herdsman must report as a failed record, not a crash.
The same arguments always write the same file: data.csv is
    generate.py 2000 --max-value 20000 --bad-every 500 --seed 7
and bench/cli_bench.sh uses `generate.py 20000 --seed 1 --bad-every 1000`.
"""
import argparse
import random
import sys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", type=int)
    parser.add_argument("--max-value", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--bad-every", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    out = sys.stdout
    out.write("id,value\n")
    for i in range(args.rows):
        if args.bad_every and i % args.bad_every == args.bad_every - 1:
            out.write(f"{i},not-a-number-{i}\n")
        else:
            out.write(f"{i},{rng.randint(0, args.max_value)}\n")


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:  # e.g. `generate.py 1000000 | head`
        sys.stderr.close()
        sys.exit(0)

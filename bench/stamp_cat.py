#!/usr/bin/env python3
"""A `lines` worker that echoes every record and, on its first record, writes the wall-clock
time (seconds since the epoch) to the file named by $HERDSMAN_BENCH_STAMP. Used by
bench/cli_bench.sh resume to measure how long a resumed run takes to reach new work."""
import os
import sys
import time

stamp = os.environ.get("HERDSMAN_BENCH_STAMP")
first = True
for line in sys.stdin.buffer:
    if first and stamp:
        with open(stamp + f".{os.getpid()}", "w") as f:
            f.write(f"{time.time():.6f}\n")
        first = False
    sys.stdout.buffer.write(line)
    sys.stdout.buffer.flush()

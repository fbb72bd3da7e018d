#!/usr/bin/env python3
"""The reference workload's worker (examples/primes/worker.py, same answers), which stops at
chosen records so that a test can kill it there: on the first attempt at a record whose id
is listed, it writes DIR/kill-<id> holding its pid and waits to be killed. The test creates
DIR/killed-<id> before killing it, so the retried attempt answers normally.

Usage: primes_killable.py DIR ID[,ID...]
"""
import os
import sys
import time

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../../examples/primes")
)
import worker  # noqa: E402  (examples/primes/worker.py: answer() is the reference)

where = sys.argv[1]
stops = {s for s in sys.argv[2].split(",") if s}
parent = os.getppid()


def hold_if_chosen(line: bytes) -> None:
    try:
        ident = str(worker.json.loads(line)["record"]["id"])
    except (ValueError, KeyError, TypeError):
        return
    if ident not in stops or os.path.exists(os.path.join(where, f"killed-{ident}")):
        return
    tmp = os.path.join(where, f".kill-{ident}.{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(str(os.getpid()))
    os.replace(tmp, os.path.join(where, f"kill-{ident}"))
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and os.getppid() == parent:
        time.sleep(0.05)
    sys.exit("primes_killable: nobody killed me (or herdsman went away)")


out = sys.stdout
for line in sys.stdin.buffer:
    if line.strip():
        hold_if_chosen(line)
        out.write(worker.answer(line))
        out.flush()

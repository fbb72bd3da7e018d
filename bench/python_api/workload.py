"""The functions the Python API benchmarks run (importable by module and name, as worker
processes need)."""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "primes"))
from primes import count_primes  # noqa: E402,F401  (the reference workload's function)


def io_bound(x):
    time.sleep(0.01)
    return x


def trivial(x):
    return x

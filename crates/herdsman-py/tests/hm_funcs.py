"""Functions the tests run on worker processes (importable by module and name)."""
import os
import signal
import subprocess
import threading
import time


class Custom(Exception):
    """An exception type of the tests' own, to check that types survive the process boundary."""

    def __init__(self, message, code):
        super().__init__(message, code)
        self.code = code


class Picky(Exception):
    """An exception whose constructor refuses its own args: it cannot be unpickled."""

    def __init__(self, message):
        super().__init__(message, "extra")


def square(x):
    return x * x


def pid_of(_x):
    return os.getpid()


def fail_on_three(x):
    if x == 3:
        raise Custom("three is not allowed", 3)
    return x


def raise_picky(x):
    raise Picky(f"picky {x}")


def crash_on_two(x):
    if x == 2:
        os._exit(3)
    return x


def segfault_on_one(x):
    if x == 1:
        import ctypes

        ctypes.string_at(0)
    return x


def sleep_on_zero(x):
    if x == 0:
        time.sleep(600)
    return x


def spawn_and_hang(path):
    """Start a child in the worker's process group, record its pid, then hang."""
    child = subprocess.Popen(["sleep", "600"])
    with open(path, "w") as f:
        f.write(str(child.pid))
    time.sleep(600)


def slow(x):
    time.sleep(0.2)
    return x


def count_primes(n):
    count = 0
    for k in range(2, n):
        for d in range(2, int(k**0.5) + 1):
            if k % d == 0:
                break
        else:
            count += 1
    return count


_calls = {}
_lock = threading.Lock()


def flaky_conn(key):
    """Raises ConnectionError on the first two calls per key in this process."""
    with _lock:
        n = _calls.get(key, 0) + 1
        _calls[key] = n
    if n <= 2:
        raise ConnectionError(f"attempt {n} of {key} failed")
    return (key, n)


def value_error(x):
    raise ValueError(f"bad {x}")


def half_second(exc):
    return 0.5


def slow_pid(_x):
    time.sleep(0.1)
    return os.getpid()


def process_row(row):
    """A dataset job's function: a CSV row in, one output record out; 'bad' rows fail."""
    if row["value"] == "bad":
        raise ValueError(f"row {row['id']} has no number")
    return {"id": int(row["id"]), "double": int(row["value"]) * 2}


def crash_on_2500(x):
    if x == 2500:
        os._exit(3)
    if x % 1000 == 7:
        raise Custom(f"bad {x}", x)
    return x + 1


def caller_name(_x):
    """The name of the worker function that called this one (how the item travelled)."""
    import sys

    return sys._getframe(1).f_code.co_name


def env_and_cwd(name):
    """What a worker process inherited: the environment variable `name` and its directory."""
    return os.environ.get(name), os.getcwd(), os.getpid()

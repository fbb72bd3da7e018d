"""Process checks shared by the tests: whether a pid still runs, and waiting for it to end."""
import os
import time


def alive(pid):
    """Whether `pid` runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def wait_dead(pid, seconds=30):
    """Waits up to `seconds` for `pid` to end; whether it did."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False

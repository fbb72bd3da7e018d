"""Functions that the end-to-end tests serve through herdsman."""

import os
import time

import herdsman_worker


def count_primes(n):
    return sum(1 for k in range(2, n + 1) if all(k % d for d in range(2, int(k ** 0.5) + 1)))


def primes(record):
    """The reference workload, plus: value "skip" filters the row, "split:a b" explodes it."""
    value = record["value"]
    if value == "skip":
        return None
    if value.startswith("split:"):
        return [{"id": int(record["id"]), "word": w} for w in value[len("split:"):].split()]
    print("working on", record["id"])  # must not reach the protocol stream
    n = int(value)
    return {"id": int(record["id"]), "value": n, "primes_up_to_value": count_primes(n)}


def flaky(record):
    """Fails retryably on the first attempt of every record (a marker file per record),
    and for good when value is "always"."""
    if record["value"] == "always":
        raise herdsman_worker.Retryable("the service is still busy", retry_after=0.01)
    marker = os.path.join(os.environ["FLAKY_DIR"], record["id"])
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise herdsman_worker.Retryable("the service is busy")
    return {"id": int(record["id"]), "attempted_before": True}


def waits(record):
    """Fails the first attempt of every record with retry_after=0.4 (a marker file per
    record holds the time of that attempt); the next attempt says how long it waited."""
    marker = os.path.join(os.environ["FLAKY_DIR"], record["id"])
    if not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(repr(time.monotonic()))
        raise herdsman_worker.Retryable("HTTP 429", retry_after=0.4)
    with open(marker) as f:
        waited = time.monotonic() - float(f.read())
    return {"id": int(record["id"]), "waited": waited}


SETUP = {}


def setup():
    SETUP["worker"] = herdsman_worker.worker_id()
    SETUP["pid"] = os.getpid()
    print("setup done")


def with_setup(record):
    return {"id": int(record["id"]), "pid": SETUP["pid"]}

"""Functions served by the tests, one per behaviour."""

import os
import subprocess
import sys

import herdsman_worker

CALLS = []


def echo(record):
    return record


def shapes(record):
    """The reply shape depends on record["kind"]."""
    kind = record.get("kind")
    if kind == "filter":
        return None
    if kind == "explode":
        return [{"n": i} for i in range(record.get("n", 3))]
    if kind == "one-list":
        return [record["list"]]
    if kind == "fail":
        raise ValueError(f"bad value {record.get('value')!r}")
    if kind == "retry":
        raise herdsman_worker.Retryable("the service is busy", retry_after=record.get("after"))
    return {"id": record.get("id"), "value": record.get("value")}


def noisy(record):
    print("a print() from user code", record.get("id"))
    sys.stdout.write("a sys.stdout.write from user code\n")
    os.system("echo a child process writing to fd 1")
    subprocess.run(["cat"], check=False)  # would swallow requests if it could read them
    return {"id": record.get("id")}


def record_setup():
    CALLS.append("setup")
    print("setup ran in worker", herdsman_worker.worker_id())
    sys.stderr.write("SETUP-CALLED\n")


def after_setup(record):
    return {"id": record.get("id"), "setup_calls": CALLS.count("setup")}


def failing_setup():
    raise RuntimeError("the model file is missing")


def who(record):
    return {"id": record.get("id"), "worker": herdsman_worker.worker_id()}


NOT_A_FUNCTION = 42


class Job:
    @staticmethod
    def run(record):
        return {"static": record.get("id")}


def start_up_imports(record):
    """Which of the modules that only errors and help need were imported to serve records."""
    return {"imported": sorted(m for m in ("argparse", "traceback", "shutil", "gettext") if m in sys.modules)}

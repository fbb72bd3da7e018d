"""Test setup: import herdsman_worker from this source tree, and help run it as a process."""

import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")
REPO = os.path.dirname(os.path.dirname(HERE))
WORKERS = os.path.join(HERE, "workers")

sys.path.insert(0, SRC)


def worker_env(**extra):
    """The environment for a worker process: this source tree first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (SRC, WORKERS, env.get("PYTHONPATH")) if p
    )
    env.pop("HERDSMAN_PROTOCOL", None)
    env.pop("HERDSMAN_WORKER", None)
    env.update(extra)
    return env


def run_worker(args, stdin=b"", cwd=None, env=None, timeout=60):
    """Run `python3 -m herdsman_worker ARGS` with STDIN; return the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", "herdsman_worker", *args],
        input=stdin,
        capture_output=True,
        cwd=cwd or WORKERS,
        env=env or worker_env(),
        timeout=timeout,
    )


@pytest.fixture(autouse=True)
def _no_protocol_env(monkeypatch):
    monkeypatch.delenv("HERDSMAN_PROTOCOL", raising=False)
    monkeypatch.delenv("HERDSMAN_WORKER", raising=False)

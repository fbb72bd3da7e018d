"""Ctrl-C (SIGINT) sent to a child interpreter running a map: a clean stop, partial results,
no orphan worker processes."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import herdsman
from procs import alive

HERE = os.path.dirname(os.path.abspath(__file__))
# Where this interpreter found herdsman (installed, or a source tree on PYTHONPATH).
PKG = os.path.dirname(os.path.dirname(os.path.abspath(herdsman.__file__)))

SCRIPT = textwrap.dedent("""
    import json, sys
    import herdsman, hm_funcs

    def progress(done, total):
        if done == 1:
            print("started", flush=True)

    try:
        herdsman.parallel_map(hm_funcs.slow_pid, range(100000), executor=sys.argv[1],
                              workers=2, on_progress=progress)
        print(json.dumps({"finished": True}), flush=True)
    except KeyboardInterrupt as interrupt:
        part = interrupt.partial
        print(json.dumps({"status": part.status, "pids": [v for _, v in part.successes()],
                          "failed": len(part.failures())}), flush=True)
""")


@pytest.mark.parametrize("executor", ["process", "thread"])
def test_ctrl_c_stops_cleanly_with_partial_results(tmp_path, executor):
    script = tmp_path / "interrupted.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([PKG, HERE, os.environ.get("PYTHONPATH", "")]))
    child = subprocess.Popen([sys.executable, str(script), executor], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout.readline().strip() == "started"
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["status"] == "cancelled"
    assert report["pids"], "the partial result lost the items that had finished"
    if executor == "process":
        workers = set(report["pids"])
        assert child.pid not in workers
        end = time.monotonic() + 30
        while time.monotonic() < end and any(alive(p) for p in workers):
            time.sleep(0.05)
        assert not any(alive(p) for p in workers), "a worker process outlived the interrupted run"

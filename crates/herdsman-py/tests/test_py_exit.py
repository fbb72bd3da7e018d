"""The interpreter's exit with calls still running on herdsman's threads: it waits for them
(up to ``herdsman.exit_grace``), never aborts, and stops runs nobody finished."""
import os
import subprocess
import sys
import textwrap
import time

import herdsman

HERE = os.path.dirname(os.path.abspath(__file__))
PKG = os.path.dirname(os.path.dirname(os.path.abspath(herdsman.__file__)))


def run_script(tmp_path, body, *args):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(body))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([PKG, HERE, os.environ.get("PYTHONPATH", "")]))
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=120)
    return done, time.monotonic() - t0


def test_a_timed_out_call_finishes_before_python_exits(tmp_path):
    # The late call ends while the interpreter would be finalizing; taking the GIL then
    # aborted the process. Now the exit waits for it, and its side effect happens.
    marker = tmp_path / "late.txt"
    done, _ = run_script(tmp_path, """
        import sys, time, herdsman

        def f(x):
            if x == 0:
                time.sleep(1.5)
                open(sys.argv[1], "w").write("late call finished")
            return x

        res = herdsman.parallel_map(f, range(4), workers=2, timeout=0.2)
        print(res.status, len(res.failures()))
    """, marker)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["completed", "1"]
    assert marker.read_text() == "late call finished"
    assert "waiting up to 10 s for 1 function call(s)" in done.stderr


def test_exit_waits_no_longer_than_exit_grace_for_a_hung_call(tmp_path):
    done, took = run_script(tmp_path, """
        import time, herdsman
        herdsman.exit_grace = 1.0
        res = herdsman.parallel_map(lambda x: time.sleep(600 if x == 0 else 0) or x, range(3),
                                    workers=2, timeout=0.2)
        print(res.status)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "completed"
    assert "exiting with 1 call(s) still running" in done.stderr
    assert took < 60


def test_runs_left_unfinished_are_stopped_at_exit(tmp_path):
    # An imap over an endless input that is never finished or closed, and a map running in
    # a daemon thread when the program ends: both are stopped, and the exit is clean.
    done, took = run_script(tmp_path, """
        import itertools, threading, time, herdsman

        def slow(x):
            time.sleep(0.01)
            return x

        it = herdsman.imap(slow, itertools.count(), workers=4)
        assert next(it).value == 0
        started = threading.Event()
        def background():
            herdsman.parallel_map(slow, itertools.count(), workers=2,
                                  on_progress=lambda done, total: started.set())
        threading.Thread(target=background, daemon=True).start()
        started.wait(60)
        print("leaving")
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "leaving"
    assert "Fatal" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert took < 60


def test_nothing_is_printed_at_exit_when_every_run_finished(tmp_path):
    done, _ = run_script(tmp_path, """
        import herdsman
        print(herdsman.parallel_map(abs, range(-3, 3), workers=2).values())
    """)
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.strip() == "[3, 2, 1, 0, 1, 2]"

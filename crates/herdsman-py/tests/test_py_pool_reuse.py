"""executor="process" keeps its worker processes for the next map: the next map with the
same settings starts no process, a crash in one map does not poison the next, and kept
workers stop on shutdown_workers() and when the interpreter exits."""
import os
import subprocess
import sys
import textwrap

import herdsman

import hm_funcs
from procs import alive, wait_dead

HERE = os.path.dirname(os.path.abspath(__file__))
PKG = os.path.dirname(os.path.dirname(os.path.abspath(herdsman.__file__)))


def both_workers():
    """The pids of a 2-worker map whose items are slow enough to start both workers."""
    pids = set(herdsman.parallel_map(hm_funcs.slow_pid, range(8), executor="process",
                                     workers=2).values())
    assert len(pids) == 2, pids
    return pids


def test_the_next_map_reuses_the_worker_processes():
    herdsman.shutdown_workers()
    first = both_workers()
    # Another function, another map: the same two processes run it.
    res = herdsman.parallel_map(hm_funcs.square, range(500), executor="process", workers=2)
    assert res.values() == [x * x for x in range(500)]
    again = set(herdsman.parallel_map(hm_funcs.pid_of, range(500), executor="process",
                                      workers=2).values())
    assert again <= first, (first, again)
    assert all(alive(p) for p in first)


def test_a_crash_in_one_map_does_not_poison_the_next():
    herdsman.shutdown_workers()
    res = herdsman.parallel_map(hm_funcs.crash_on_two, range(6), executor="process", workers=2)
    (index, exc), = res.failures()
    assert index == 2 and isinstance(exc, herdsman.WorkerCrashed)
    res = herdsman.parallel_map(hm_funcs.fail_on_three, range(300), executor="process",
                                workers=2)
    (index, exc), = res.failures()
    assert index == 3 and type(exc) is hm_funcs.Custom
    assert [v for _, v in res.successes()] == [x for x in range(300) if x != 3]
    res = herdsman.parallel_map(hm_funcs.square, range(300), executor="process", workers=2)
    assert res.ok and res.values() == [x * x for x in range(300)]


def test_a_timed_out_item_in_one_map_does_not_poison_the_next():
    herdsman.shutdown_workers()
    res = herdsman.parallel_map(hm_funcs.sleep_on_zero, range(4), executor="process", workers=2,
                                timeout=1.0)
    (index, exc), = res.failures()
    assert index == 0 and isinstance(exc, herdsman.ItemTimeout)
    res = herdsman.parallel_map(hm_funcs.square, range(50), executor="process", workers=2,
                                timeout=30.0)
    assert res.ok and res.values() == [x * x for x in range(50)]


def test_other_settings_start_other_workers():
    herdsman.shutdown_workers()
    first = both_workers()
    one = set(herdsman.parallel_map(hm_funcs.pid_of, range(20), executor="process",
                                    workers=1).values())
    assert len(one) == 1 and not (one & first)


def test_shutdown_workers_stops_the_kept_workers():
    pids = both_workers()
    herdsman.shutdown_workers()
    assert all(wait_dead(p) for p in pids)
    # The next map starts new workers and works.
    res = herdsman.parallel_map(hm_funcs.pid_of, range(100), executor="process", workers=2)
    assert not (set(res.values()) & pids)


def test_kept_workers_stop_when_python_exits(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent("""
        import herdsman, hm_funcs
        pids = herdsman.parallel_map(hm_funcs.slow_pid, range(8), executor="process",
                                     workers=2).values()
        print(" ".join(str(p) for p in sorted(set(pids))))
    """))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([PKG, HERE, os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    pids = [int(p) for p in done.stdout.split()]
    assert len(pids) == 2
    assert all(wait_dead(p) for p in pids)


def test_a_changed_environment_or_directory_gets_new_workers(tmp_path, monkeypatch):
    # Workers inherit the environment and the directory when they start: a map after a
    # change must not run on workers started before it.
    herdsman.shutdown_workers()
    monkeypatch.delenv("HM_POOL_REUSE", raising=False)
    before = herdsman.parallel_map(hm_funcs.env_and_cwd, ["HM_POOL_REUSE"] * 4,
                                   executor="process", workers=2).values()
    assert {v for v, _, _ in before} == {None}
    monkeypatch.setenv("HM_POOL_REUSE", "set")
    after = herdsman.parallel_map(hm_funcs.env_and_cwd, ["HM_POOL_REUSE"] * 4,
                                  executor="process", workers=2).values()
    assert {v for v, _, _ in after} == {"set"}
    assert not ({p for _, _, p in after} & {p for _, _, p in before})
    monkeypatch.chdir(tmp_path)
    moved = herdsman.parallel_map(hm_funcs.env_and_cwd, ["HM_POOL_REUSE"] * 4,
                                  executor="process", workers=2).values()
    assert {c for _, c, _ in moved} == {str(tmp_path)}

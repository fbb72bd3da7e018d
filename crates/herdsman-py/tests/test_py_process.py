"""executor="process": persistent worker interpreters, crashes, timeouts, pickling."""
import os
import subprocess
import sys
import textwrap

import pytest

import herdsman

import hm_funcs
from procs import wait_dead

# Where this interpreter found herdsman (installed, or a source tree on PYTHONPATH).
PKG = os.path.dirname(os.path.dirname(os.path.abspath(herdsman.__file__)))


def test_values_in_order_on_persistent_workers():
    res = herdsman.parallel_map(hm_funcs.square, range(300), executor="process", workers=2)
    assert res.ok, res.failures()
    assert list(res) == [x * x for x in range(300)]
    pids = herdsman.parallel_map(hm_funcs.pid_of, range(50), executor="process", workers=2).values()
    assert os.getpid() not in pids
    assert 1 <= len(set(pids)) <= 2  # persistent: not one process per item


def test_exception_types_survive_the_process_boundary():
    res = herdsman.parallel_map(hm_funcs.fail_on_three, range(6), executor="process", workers=2)
    (index, exc), = res.failures()
    assert index == 3
    assert type(exc) is hm_funcs.Custom and exc.code == 3
    assert isinstance(exc.__cause__, herdsman.RemoteTraceback)
    assert "fail_on_three" in str(exc.__cause__)
    assert [v for _, v in res.successes()] == [0, 1, 2, 4, 5]


def test_exception_that_cannot_be_unpickled_is_described():
    res = herdsman.parallel_map(hm_funcs.raise_picky, [7], executor="process", workers=1)
    (_, exc), = res.failures()
    assert isinstance(exc, RuntimeError)
    assert "Picky" in str(exc) and "picky 7" in str(exc)


def test_a_crashed_worker_charges_only_its_item():
    res = herdsman.parallel_map(hm_funcs.crash_on_two, range(8), executor="process", workers=2)
    (index, exc), = res.failures()
    assert index == 2 and isinstance(exc, herdsman.WorkerCrashed)
    assert [v for _, v in res.successes()] == [0, 1, 3, 4, 5, 6, 7]


def test_a_segfault_charges_only_its_item():
    res = herdsman.parallel_map(hm_funcs.segfault_on_one, range(6), executor="process", workers=2)
    (index, exc), = res.failures()
    assert index == 1 and isinstance(exc, herdsman.WorkerCrashed)
    assert "SIGSEGV" in str(exc) or "signal" in str(exc)
    assert [v for _, v in res.successes()] == [0, 2, 3, 4, 5]


def test_timeout_kills_the_workers_process_group(tmp_path):
    marker = tmp_path / "child.pid"
    res = herdsman.parallel_map(hm_funcs.spawn_and_hang, [str(marker)], executor="process",
                                workers=1, timeout=1.0)
    (index, exc), = res.failures()
    assert index == 0 and isinstance(exc, herdsman.ItemTimeout)
    child = int(marker.read_text())
    assert wait_dead(child), "the worker's child outlived the timeout"


def test_timeout_fails_the_slow_item_and_the_others_go_on():
    res = herdsman.parallel_map(hm_funcs.sleep_on_zero, range(5), executor="process",
                                workers=2, timeout=1.0)
    (index, exc), = res.failures()
    assert index == 0 and isinstance(exc, herdsman.ItemTimeout)
    assert [v for _, v in res.successes()] == [1, 2, 3, 4]


def test_unpicklable_items_fail_alone():
    import threading

    items = [1, threading.Lock(), 3]
    res = herdsman.parallel_map(hm_funcs.pid_of, items, executor="process", workers=1)
    (index, exc), = res.failures()
    assert index == 1 and isinstance(exc, TypeError) and "pickle" in str(exc)
    assert len(res.successes()) == 2


def test_lambdas_get_a_clear_error_without_cloudpickle(monkeypatch):
    monkeypatch.setitem(sys.modules, "cloudpickle", None)
    with pytest.raises(TypeError, match="define it with def at the top level"):
        herdsman.parallel_map(lambda x: x, [1], executor="process")


def test_lambdas_and_closures_work_with_cloudpickle():
    pytest.importorskip("cloudpickle")
    k = 7
    res = herdsman.parallel_map(lambda x: x * k, [1, 2], executor="process", workers=1)
    assert res.values() == [7, 14]


def test_retry_on_processes_follows_on_types():
    res = herdsman.parallel_map(
        hm_funcs.flaky_conn, ["p-a"], executor="process", workers=1,
        retry=herdsman.Retry(attempts=3, backoff=0.01, on=(ConnectionError,)),
    )
    assert res.values() == [("p-a", 3)]
    assert res.summary["retries"] == 2
    res = herdsman.parallel_map(
        hm_funcs.value_error, [1], executor="process", workers=1,
        retry=herdsman.Retry(attempts=3, backoff=0.01, on=(ConnectionError,)),
    )
    assert res.failures()[0].attempts == 1


def test_decorated_functions_run_on_processes():
    res = hm_parallel_double.map([1, 2, 3], executor="process", workers=2)
    assert res.values() == [2, 4, 6]


@herdsman.parallel(workers=2)
def hm_parallel_double(x):
    return x * 2


def test_main_module_functions_work_as_with_spawn(tmp_path):
    script = tmp_path / "main_script.py"
    script.write_text(textwrap.dedent("""
        import herdsman

        def triple(x):
            return x * 3

        if __name__ == "__main__":
            print(herdsman.parallel_map(triple, range(5), executor="process", workers=2).values())
    """))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([PKG, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[0, 3, 6, 9, 12]"


def test_imap_over_processes():
    outs = list(herdsman.imap(hm_funcs.square, range(40), executor="process", workers=2))
    assert [o.value for o in outs] == [x * x for x in range(40)]


def test_tiny_items_travel_in_batches_and_a_crash_still_charges_one_item():
    # Thousands of tiny items go to the workers in batches; a worker that dies in a batch
    # has the batch sent again item by item, so only the item that crashes it is charged.
    res = herdsman.parallel_map(hm_funcs.crash_on_2500, range(5000), executor="process",
                                workers=2)
    fails = res.failures()
    assert [i for i, _ in fails] == [7, 1007, 2007, 2500, 3007, 4007]
    crash = dict(fails)[2500]
    assert isinstance(crash, herdsman.WorkerCrashed)
    assert all(type(e) is hm_funcs.Custom and e.code == i for i, e in fails if i != 2500)
    assert res.successes() == [(x, x + 1) for x in range(5000) if x % 1000 != 7 and x != 2500]
    assert res.summary["succeeded"] == 4994 and res.summary["failed"] == 6


def test_tiny_items_are_batched_from_the_first_record_on():
    # Every record of tiny items is a batch (a list), from the very first one: its reply
    # carries the worker's time, from which the next batches are sized. Items that travel
    # in a batch are called by the worker's `one_part`; an item sent alone, by `main`.
    res = herdsman.parallel_map(hm_funcs.caller_name, range(2000), executor="process",
                                workers=2)
    callers = res.values()
    assert callers.count("one_part") == 2000, sorted(set(callers))


def test_retries_inside_batches_follow_the_policy():
    keys = [f"b-{i}" for i in range(300)]
    res = herdsman.parallel_map(hm_funcs.flaky_conn, keys, executor="process", workers=1,
                                retry=herdsman.Retry(attempts=3, backoff=0.001, on=ConnectionError))
    assert res.values() == [(k, 3) for k in keys]

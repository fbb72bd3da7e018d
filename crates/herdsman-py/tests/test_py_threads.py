"""parallel_map, imap and @parallel on threads: results, policies and callbacks."""
import itertools
import threading
import time

import pytest

import herdsman
from herdsman import ExceptionGroup

import hm_funcs


def test_values_in_order_and_result_object():
    res = herdsman.parallel_map(hm_funcs.square, range(200), workers=8)
    assert res.ok and res.status == "completed"
    assert list(res) == [x * x for x in range(200)]
    assert res.values() == [x * x for x in range(200)]
    assert res.successes()[:3] == [(0, 0), (1, 1), (2, 4)]
    assert res.failures() == []
    assert len(res) == 200
    assert res.summary["succeeded"] == 200


def test_failures_carry_index_exception_attempts_and_duration():
    def f(x):
        if x % 5 == 0:
            time.sleep(0.01)
            raise ValueError(f"bad {x}")
        return x

    res = herdsman.parallel_map(f, range(20), workers=4)
    assert not res.ok
    assert res.status == "completed"
    fails = res.failures()
    assert [i for i, _ in fails] == [0, 5, 10, 15]
    for index, exc in fails:
        assert isinstance(exc, ValueError) and str(exc) == f"bad {index}"
    assert all(f.attempts == 1 for f in fails)
    assert all(f.duration >= 0.009 for f in fails)
    assert [i for i, _ in res.successes()] == [i for i in range(20) if i % 5]


def test_iterating_raises_exception_group_at_first_failure():
    def f(x):
        if x in (3, 7):
            raise KeyError(x)
        return x

    res = herdsman.parallel_map(f, range(10), workers=3)
    seen = []
    with pytest.raises(ExceptionGroup) as info:
        for v in res:
            seen.append(v)
    assert seen == [0, 1, 2]
    assert [type(e) for e in info.value.exceptions] == [KeyError, KeyError]
    with pytest.raises(ExceptionGroup):
        res.values()


def test_workers_1_runs_sequentially_on_the_calling_thread():
    me = threading.get_ident()
    calls = []

    def f(x):
        calls.append((x, threading.get_ident()))
        return x + 1

    res = herdsman.parallel_map(f, [3, 1, 2], workers=1)
    assert list(res) == [4, 2, 3]
    assert calls == [(3, me), (1, me), (2, me)]


def test_default_workers_match_the_stdlib():
    import os

    seen = set()
    barrier = threading.Barrier(min(32, (os.cpu_count() or 1) + 4), timeout=60)

    def f(_):
        seen.add(threading.get_ident())
        barrier.wait()

    res = herdsman.parallel_map(f, range(barrier.parties))
    assert res.ok, res.failures()
    assert len(seen) == barrier.parties


def test_threads_overlap_io_bound_work():
    # 64 sleeps of 0.2 s on 64 threads: far less than the 12.8 s they take one by one.
    t0 = time.monotonic()
    res = herdsman.parallel_map(lambda x: time.sleep(0.2) or x, range(64), workers=64)
    assert res.ok
    assert time.monotonic() - t0 < 6.4


def test_unordered_returns_every_item():
    res = herdsman.parallel_map(hm_funcs.square, range(100), workers=4, ordered=False)
    assert sorted(res) == [x * x for x in range(100)]
    assert sorted(i for i, _ in res.successes()) == list(range(100))


def test_rate_limit_number_means_per_second():
    t0 = time.monotonic()
    res = herdsman.parallel_map(hm_funcs.square, range(6), workers=4,
                                rate_limit=herdsman.RateLimit(5, "second", burst=1))
    assert res.ok
    # Six attempts at 5/s with a burst of one: at least five intervals of 0.2 s.
    assert time.monotonic() - t0 >= 0.95
    lim = herdsman.RateLimit(90, "minute")
    assert (lim.count, lim.per) == (90, "minute")
    t0 = time.monotonic()
    assert herdsman.parallel_map(hm_funcs.square, range(3), rate_limit=2).ok
    assert time.monotonic() - t0 >= 0.45


def test_one_rate_limit_shared_by_two_maps_in_two_threads():
    lim = herdsman.RateLimit(10, "second", burst=1)
    out = []

    def job():
        out.append(herdsman.parallel_map(hm_funcs.square, range(5), workers=4, rate_limit=lim))

    t0 = time.monotonic()
    threads = [threading.Thread(target=job) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.ok for r in out)
    # Ten attempts from one budget of 10/s: at least nine intervals of 0.1 s.
    assert time.monotonic() - t0 >= 0.85


def test_rate_limit_pause_holds_back_the_map():
    lim = herdsman.RateLimit(1000, "second")
    lim.pause(1.0)
    t0 = time.monotonic()
    assert herdsman.parallel_map(hm_funcs.square, range(3), rate_limit=lim).ok
    assert time.monotonic() - t0 >= 0.9


def test_bad_rate_limits_say_what_to_do():
    with pytest.raises(ValueError, match="hour"):
        herdsman.RateLimit(5, "fortnight")
    with pytest.raises(ValueError, match="whole number"):
        herdsman.parallel_map(hm_funcs.square, [1], rate_limit=2.5)


def test_retry_retries_only_the_listed_exceptions():
    res = herdsman.parallel_map(
        hm_funcs.flaky_conn, ["t-a", "t-b"], workers=2,
        retry=herdsman.Retry(attempts=3, backoff=0.01, on=(ConnectionError,)),
    )
    assert res.ok, res.failures()
    assert list(res) == [("t-a", 3), ("t-b", 3)]
    res = herdsman.parallel_map(
        hm_funcs.value_error, [1], retry=herdsman.Retry(attempts=3, backoff=0.01, on=ConnectionError)
    )
    assert res.failures()[0].attempts == 1


def test_retry_gives_up_after_attempts_and_reports_them():
    res = herdsman.parallel_map(hm_funcs.value_error, [1, 2], workers=2,
                                retry=herdsman.Retry(attempts=3, backoff=0.01, jitter=False))
    assert [f.attempts for f in res.failures()] == [3, 3]
    assert res.summary["retries"] == 4


def test_retry_after_waits_as_the_server_asks():
    t0 = time.monotonic()
    res = herdsman.parallel_map(
        hm_funcs.flaky_conn, ["ra"], retry=herdsman.Retry(attempts=3, backoff=0.0, retry_after=hm_funcs.half_second)
    )
    assert res.ok
    assert time.monotonic() - t0 >= 0.95  # two waits of 0.5 s


def test_timeout_fails_the_slow_item_only():
    res = herdsman.parallel_map(lambda x: time.sleep(3 if x == 0 else 0) or x, range(4),
                                workers=2, timeout=0.5)
    (index, exc), = res.failures()
    assert index == 0 and isinstance(exc, herdsman.ItemTimeout) and isinstance(exc, TimeoutError)
    assert [v for _, v in res.successes()] == [1, 2, 3]


def test_deadline_stops_the_run():
    t0 = time.monotonic()
    res = herdsman.parallel_map(hm_funcs.slow, itertools.count(), workers=2, deadline=1.0)
    assert res.status == "timed_out"
    assert time.monotonic() - t0 < 20
    assert res.successes()
    with pytest.raises(ExceptionGroup):
        list(res)


def test_max_errors_aborts():
    res = herdsman.parallel_map(hm_funcs.value_error, itertools.count(), workers=2, max_errors=3)
    assert res.status == "aborted"
    assert sum(1 for f in res.failures() if isinstance(f.exception, ValueError)) >= 3


def test_on_progress_and_progress_line(capsys):
    seen = []
    res = herdsman.parallel_map(hm_funcs.square, range(50), workers=4,
                                on_progress=lambda done, total: seen.append((done, total)),
                                progress=True)
    assert res.ok
    assert seen[-1] == (50, 50)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert "50/50 items done" in capsys.readouterr().err


def test_batch_size_bounds_what_is_taken_from_the_input():
    pulled = []

    def source():
        for i in range(200):
            pulled.append(i)
            yield i

    gate = threading.Event()
    done = []

    def f(x):
        if x == 0:
            gate.wait(30)
        done.append(x)
        return x

    it = herdsman.imap(f, source(), workers=4, batch_size=10)
    # While item 0 holds the ordered stream, no more than the window can be taken.
    deadline = time.monotonic() + 30
    while len(done) < 9 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    assert len(pulled) <= 10 + 2
    gate.set()
    assert [o.value for o in it] == list(range(200))


def test_input_errors_are_raised():
    def source():
        yield 1
        raise OSError("the source broke")

    with pytest.raises(OSError, match="source broke"):
        herdsman.parallel_map(hm_funcs.square, source(), workers=2)


def test_imap_streams_lazily_over_an_endless_iterable():
    got = []
    for o in herdsman.imap(hm_funcs.square, itertools.count(), workers=4):
        got.append(o.value)
        if len(got) == 100:
            break
    assert got == [x * x for x in range(100)]


def test_imap_unordered_and_failures_as_outcomes():
    outs = list(herdsman.imap(hm_funcs.fail_on_three, range(8), workers=3, ordered=False))
    assert sorted(o.index for o in outs) == list(range(8))
    bad = [o for o in outs if not o.ok]
    assert len(bad) == 1 and bad[0].index == 3 and isinstance(bad[0].exception, hm_funcs.Custom)
    with pytest.raises(hm_funcs.Custom):
        bad[0].unwrap()


def test_parallel_decorator_keeps_calls_and_adds_map():
    @herdsman.parallel(workers=2)
    def double(x):
        return x * 2

    assert double(5) == 10
    assert list(double.map([1, 2, 3])) == [2, 4, 6]
    assert [o.value for o in double.imap([4])] == [8]

    @herdsman.parallel
    def triple(x):
        return x * 3

    assert triple(2) == 6 and triple.map([1]).values() == [3]


def test_keyboard_interrupt_in_the_function_stops_a_sequential_run():
    def f(x):
        if x == 2:
            raise KeyboardInterrupt
        return x

    with pytest.raises(KeyboardInterrupt) as info:
        herdsman.parallel_map(f, range(10), workers=1)
    assert [v for _, v in info.value.partial.successes()] == [0, 1]


def test_many_fast_items_each_end_exactly_once():
    # Fast functions run in chunks (one GIL hand-off per chunk): every item still ends once,
    # in order, with its own failure and progress counted in items.
    def f(x):
        if x % 997 == 0:
            raise ValueError(x)
        return -x

    seen = []
    for workers in (1, 3, None):
        res = herdsman.parallel_map(f, range(20000), workers=workers,
                                    on_progress=lambda d, t: seen.append((d, t)))
        assert [i for i, _ in res.failures()] == list(range(0, 20000, 997))
        assert all(e.args == (i,) for i, e in res.failures())
        assert res.successes() == [(x, -x) for x in range(20000) if x % 997]
        assert seen[-1] == (20000, 20000)
        assert res.summary["status"] == "completed"
    res = herdsman.parallel_map(f, range(1, 20000), ordered=False)
    assert sorted(-v for _, v in res.successes()) == [x for x in range(1, 20000) if x % 997]
    assert all(v == -(i + 1) for i, v in res.successes())

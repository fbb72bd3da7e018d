"""map_async for asyncio code, and herdsman.run dataset jobs through the CLI."""
import asyncio
import json
import os
import sys
import time

import pytest

import herdsman

import hm_funcs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


async def fetch(x):
    await asyncio.sleep(0.05)
    if x == 4:
        raise ConnectionError("four")
    return x * 10


def test_map_async_runs_concurrently_and_reports_failures():
    t0 = time.monotonic()
    res = asyncio.run(herdsman.map_async(fetch, range(40), concurrency=20))
    # 40 sleeps of 0.05 s, 20 at once: far below the 2 s they take one by one.
    assert time.monotonic() - t0 < 1.5
    assert [i for i, _ in res.failures()] == [4]
    assert isinstance(res.failures()[0].exception, ConnectionError)
    assert [v for _, v in res.successes()] == [x * 10 for x in range(40) if x != 4]
    assert not res.ok and res.status == "completed"


def test_map_async_bounds_concurrency_and_takes_async_iterables():
    now = {"n": 0, "max": 0}

    async def f(x):
        now["n"] += 1
        now["max"] = max(now["max"], now["n"])
        await asyncio.sleep(0.01)
        now["n"] -= 1
        return x

    async def source():
        for i in range(30):
            yield i

    res = asyncio.run(herdsman.map_async(f, source(), concurrency=3))
    assert res.values() == list(range(30))
    assert now["max"] == 3


def test_map_async_retry_timeout_and_deadline():
    calls = {}

    async def flaky(x):
        calls[x] = calls.get(x, 0) + 1
        if calls[x] < 3:
            raise ConnectionError("again")
        return x

    res = asyncio.run(herdsman.map_async(flaky, [1, 2], retry=herdsman.Retry(attempts=3, backoff=0.01)))
    assert res.values() == [1, 2] and res.summary["retries"] == 4

    async def slow(x):
        await asyncio.sleep(5 if x == 0 else 0)
        return x

    res = asyncio.run(herdsman.map_async(slow, range(3), timeout=0.2))
    assert [(i, type(e)) for i, e in res.failures()] == [(0, herdsman.ItemTimeout)]

    res = asyncio.run(herdsman.map_async(slow, range(3), deadline=0.5))
    assert res.status == "timed_out"
    assert [i for i, _ in res.failures()] == [0]


def herdsman_bin():
    candidates = [os.environ.get("HERDSMAN_BIN")]
    if os.environ.get("CARGO_TARGET_DIR"):
        candidates.append(os.path.join(os.environ["CARGO_TARGET_DIR"], "debug", "herdsman"))
    candidates.append(os.path.join(REPO, "target", "debug", "herdsman"))
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    pytest.fail("no herdsman binary: run `cargo build -p herdsman-cli` first, or set HERDSMAN_BIN")


def test_run_a_dataset_job_with_dead_letters_and_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("HERDSMAN_BIN", herdsman_bin())
    data = tmp_path / "data.csv"
    data.write_text("id,value\n1,10\n2,bad\n3,30\n")
    out, bad = tmp_path / "out.jsonl", tmp_path / "bad.jsonl"
    monkeypatch.chdir(tmp_path)
    job = herdsman.run(input=str(data), fn=hm_funcs.process_row, output=str(out),
                       failures=str(bad), workers=2, quiet=True)
    assert job.returncode == 1  # one record failed: the CLI says so with exit status 1
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == [{"id": 1, "double": 20}, {"id": 3, "double": 60}]
    dead = [json.loads(line) for line in bad.read_text().splitlines()]
    assert len(dead) == 1 and "row 2 has no number" in json.dumps(dead[0])
    assert job.summary, "the job's summary (--summary-json) is missing"
    # The same job again: everything is already accounted for, nothing runs twice.
    again = herdsman.run(input=str(data), fn=hm_funcs.process_row, output=str(out),
                         failures=str(bad), workers=2, quiet=True)
    assert [json.loads(line) for line in out.read_text().splitlines()] == rows
    assert again.returncode == 1
    # A usage error is raised with the CLI's own sentence.
    with pytest.raises(herdsman.HerdsmanError, match="exit status 2"):
        herdsman.run(input=str(data), fn=hm_funcs.process_row, output=str(out), jobs="many")


def test_run_without_the_program_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HERDSMAN_BIN", "")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(herdsman.HerdsmanError, match="HERDSMAN_BIN"):
        herdsman.run(input="x.csv", fn=hm_funcs.process_row, output="o.jsonl")

"""End to end: the real herdsman binary runs `python3 -m herdsman_worker module:function`.

The binary is $HERDSMAN_BIN, else $CARGO_TARGET_DIR/debug/herdsman, else
<repo>/target/debug/herdsman: build it first with `cargo build -p herdsman-cli`.
"""

import json
import os
import shlex
import subprocess
import sys

import pytest

from conftest import REPO, WORKERS, worker_env


def herdsman_bin():
    candidates = [os.environ.get("HERDSMAN_BIN")]
    if os.environ.get("CARGO_TARGET_DIR"):
        candidates.append(os.path.join(os.environ["CARGO_TARGET_DIR"], "debug", "herdsman"))
    candidates.append(os.path.join(REPO, "target", "debug", "herdsman"))
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    pytest.fail(
        "no herdsman binary: run `cargo build -p herdsman-cli` first, or set HERDSMAN_BIN "
        f"(looked at {', '.join(c for c in candidates if c)})"
    )


def worker_cmd(target, *args):
    return shlex.join([sys.executable, "-m", "herdsman_worker", target, *args])


def herdsman(tmp_path, *args, env=None):
    """Run `herdsman run ARGS` in tmp_path; returns the CompletedProcess."""
    return subprocess.run(
        [herdsman_bin(), "run", "--progress", "none", *args],
        cwd=tmp_path,
        env=env or worker_env(),
        capture_output=True,
        timeout=180,
    )


def jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def summary(tmp_path):
    with open(tmp_path / "s.json", encoding="utf-8") as f:
        return json.load(f)


def count(s, name):
    """A count from the summary JSON, wherever this version of herdsman puts it."""
    if name in s:
        return s[name]
    for value in s.values():
        if isinstance(value, dict) and name in value:
            return value[name]
    raise AssertionError(f"no {name!r} in the summary {s}")


def test_csv_through_a_dotted_module_function(tmp_path):
    rows = ["id,value", "1,17", "2,skip", "3,x", "4,split:a b c", "5,100", "6,1.5", "7,0"]
    (tmp_path / "in.csv").write_text("\n".join(rows) + "\n")
    p = herdsman(
        tmp_path,
        "-i", "in.csv", "-o", "out.jsonl", "--protocol", "framed", "-j", "2",
        "-w", worker_cmd("e2e_funcs:primes"), "--summary-json", "s.json",
    )
    err = p.stderr.decode()
    assert p.returncode == 1, err  # some records failed
    assert jsonl(tmp_path / "out.jsonl") == [
        {"id": 1, "value": 17, "primes_up_to_value": 7},
        {"id": 4, "word": "a"},
        {"id": 4, "word": "b"},
        {"id": 4, "word": "c"},
        {"id": 5, "value": 100, "primes_up_to_value": 25},
        {"id": 7, "value": 0, "primes_up_to_value": 0},
    ]
    dead = jsonl(tmp_path / "out.failures.jsonl")
    assert [d["record"]["id"] for d in dead] == ["3", "6"]
    text = json.dumps(dead)
    assert "ValueError: invalid literal for int() with base 10: 'x'" in text
    assert "'1.5'" in text
    s = summary(tmp_path)
    assert count(s, "records") == 7
    assert count(s, "succeeded") == 4
    assert count(s, "failed") == 2
    assert count(s, "filtered") == 1
    # print() in the function went to herdsman's log of the worker's stderr, not the output.
    assert "working on 1" in err, err


def test_retryable_is_retried_and_a_file_path_function(tmp_path):
    flaky_dir = tmp_path / "markers"
    flaky_dir.mkdir()
    (tmp_path / "in.csv").write_text("id,value\n1,a\n2,b\n3,always\n4,c\n")
    path = os.path.join(WORKERS, "e2e_funcs.py")
    p = herdsman(
        tmp_path,
        "-i", "in.csv", "-o", "out.jsonl", "--protocol", "framed", "-j", "2",
        "--retries", "2", "--backoff", "10ms",
        "-w", worker_cmd(f"{path}:flaky"), "--summary-json", "s.json",
        env=worker_env(FLAKY_DIR=str(flaky_dir)),
    )
    assert p.returncode == 1, p.stderr.decode()
    assert jsonl(tmp_path / "out.jsonl") == [
        {"id": i, "attempted_before": True} for i in (1, 2, 4)
    ]
    dead = jsonl(tmp_path / "out.failures.jsonl")
    assert len(dead) == 1 and dead[0]["record"]["id"] == "3"
    assert "the service is still busy" in json.dumps(dead[0])
    s = summary(tmp_path)
    assert (count(s, "succeeded"), count(s, "failed"), count(s, "filtered")) == (3, 1, 0)


def test_retryable_retry_after_is_waited_before_the_retry(tmp_path):
    flaky_dir = tmp_path / "markers"
    flaky_dir.mkdir()
    (tmp_path / "in.csv").write_text("id\n1\n2\n3\n")
    path = os.path.join(WORKERS, "e2e_funcs.py")
    p = herdsman(
        tmp_path,
        "-i", "in.csv", "-o", "out.jsonl", "--protocol", "framed", "-j", "2",
        "--retries", "1", "--backoff", "1ms",
        "-w", worker_cmd(f"{path}:waits"), "--summary-json", "s.json",
        env=worker_env(FLAKY_DIR=str(flaky_dir)),
    )
    assert p.returncode == 0, p.stderr.decode()
    out = jsonl(tmp_path / "out.jsonl")
    assert [o["id"] for o in out] == [1, 2, 3]
    # herdsman waited the Retryable's retry_after, not its 1 ms --backoff.
    assert all(o["waited"] >= 0.4 for o in out), out
    assert count(summary(tmp_path), "retries") == 3


def test_setup_runs_once_per_worker(tmp_path):
    (tmp_path / "in.csv").write_text("id\n" + "".join(f"{i}\n" for i in range(40)))
    p = herdsman(
        tmp_path,
        "-i", "in.csv", "-o", "out.jsonl", "--protocol", "framed", "-j", "2",
        "-w", worker_cmd("e2e_funcs:with_setup", "--setup", "e2e_funcs:setup"),
    )
    assert p.returncode == 0, p.stderr.decode()
    out = jsonl(tmp_path / "out.jsonl")
    assert [o["id"] for o in out] == list(range(40))
    assert 1 <= len({o["pid"] for o in out}) <= 2


def test_lines_protocol_from_the_environment(tmp_path):
    (tmp_path / "in.csv").write_text("id,value\n1,17\n2,10\n")
    p = herdsman(
        tmp_path,
        "-i", "in.csv", "-o", "out.jsonl", "-j", "1",
        "-w", worker_cmd("e2e_funcs:primes"),
        env=worker_env(HERDSMAN_PROTOCOL="lines"),
    )
    assert p.returncode == 0, p.stderr.decode()
    assert jsonl(tmp_path / "out.jsonl") == [
        {"id": 1, "value": 17, "primes_up_to_value": 7},
        {"id": 2, "value": 10, "primes_up_to_value": 4},
    ]


def test_a_missing_module_stops_the_run_with_its_message(tmp_path):
    # Enough records that herdsman's rule for workers that never answer stops the run.
    (tmp_path / "in.csv").write_text("id\n" + "".join(f"{i}\n" for i in range(50)))
    p = herdsman(
        tmp_path,
        "-i", "in.csv", "-o", "out.jsonl", "--protocol", "framed", "-j", "1",
        "-w", worker_cmd("no_such_module:fn"),
    )
    err = p.stderr.decode()
    assert p.returncode not in (0, 1), err
    last = [line for line in err.splitlines() if "without answering any record" in line]
    assert last, err
    assert "cannot find module `no_such_module`" in last[0], err


def test_the_protocol_is_detected_without_a_flag(tmp_path):
    # `python -m herdsman_worker` is recognised: no --protocol needed, and herdsman tells
    # the worker which protocol it speaks in HERDSMAN_PROTOCOL.
    (tmp_path / "in.csv").write_text("id,value\n" + "".join(f"{i},{i}\n" for i in range(50)))
    p = herdsman(
        tmp_path,
        "-i", "in.csv", "-o", "out.jsonl", "-j", "1",
        "-w", worker_cmd("e2e_funcs:primes"),
    )
    assert p.returncode == 0, p.stderr.decode()
    assert len(jsonl(tmp_path / "out.jsonl")) == 50


def test_an_explicit_lines_protocol_is_told_to_the_worker(tmp_path):
    (tmp_path / "in.csv").write_text("id,value\n" + "".join(f"{i},{i}\n" for i in range(5)))
    p = herdsman(
        tmp_path,
        "-i", "in.csv", "-o", "out.jsonl", "-j", "1", "--protocol", "lines",
        "-w", worker_cmd("e2e_funcs:primes"),
    )
    assert p.returncode == 0, p.stderr.decode()
    assert len(jsonl(tmp_path / "out.jsonl")) == 5

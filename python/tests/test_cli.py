"""`python3 -m herdsman_worker MODULE:FUNCTION` as a real process."""

import json
import os
import subprocess
import sys

import pytest
from conftest import WORKERS, run_worker, worker_env


def framed(*records):
    return b"".join(
        json.dumps({"id": i, "record": r}).encode() + b"\n" for i, r in enumerate(records)
    )


def replies(stdout):
    return [json.loads(line) for line in stdout.decode().split("\n") if line]


def test_dotted_module_function():
    p = run_worker(["funcs:shapes"], framed({"id": 1, "value": "x"}, {"kind": "filter"}))
    assert p.returncode == 0, p.stderr.decode()
    assert replies(p.stdout) == [
        {"id": 0, "output": {"id": 1, "value": "x"}, "done": True},
        {"id": 1, "done": True},
    ]


def test_file_path_function_from_another_directory(tmp_path):
    path = os.path.join(WORKERS, "funcs.py")
    p = run_worker([f"{path}:echo"], framed({"a": 1}), cwd=str(tmp_path))
    assert p.returncode == 0, p.stderr.decode()
    assert replies(p.stdout) == [{"id": 0, "output": {"a": 1}, "done": True}]


def test_relative_file_path_and_a_dotted_attribute():
    p = run_worker(["./funcs.py:Job.run"], framed({"id": 7}))
    assert p.returncode == 0, p.stderr.decode()
    assert replies(p.stdout) == [{"id": 0, "output": {"static": 7}, "done": True}]


def test_prints_subprocesses_and_import_time_prints_stay_off_stdout():
    p = run_worker(["funcs:noisy"], framed({"id": 1}, {"id": 2}))
    assert p.returncode == 0, p.stderr.decode()
    assert replies(p.stdout) == [
        {"id": 0, "output": {"id": 1}, "done": True},
        {"id": 1, "output": {"id": 2}, "done": True},
    ]
    err = p.stderr.decode()
    assert "a print() from user code 1" in err
    assert "a sys.stdout.write from user code" in err
    assert "a child process writing to fd 1" in err

    p = run_worker(["prints_at_import:fn"], framed({"id": 5}))
    assert p.returncode == 0, p.stderr.decode()
    assert replies(p.stdout) == [{"id": 0, "output": {"ok": 5}, "done": True}]
    assert "printed while the module was imported" in p.stderr.decode()


def one_line_error(p):
    err = p.stderr.decode().strip().splitlines()
    assert err, "an error message on stderr"
    assert err[-1].startswith("herdsman_worker: "), err
    return err[-1]


def test_missing_module_exits_2_before_reading_input():
    p = run_worker(["no_such_module:fn"], framed({"id": 1}))
    assert p.returncode == 2
    assert p.stdout == b""
    assert len(p.stderr.decode().strip().splitlines()) == 1, p.stderr.decode()
    msg = one_line_error(p)
    assert "cannot find module `no_such_module`" in msg and "PYTHONPATH" in msg


def test_missing_file_exits_2():
    p = run_worker(["nowhere/worker.py:fn"], framed({"id": 1}))
    assert p.returncode == 2 and p.stdout == b""
    assert "no file `nowhere/worker.py`" in one_line_error(p)


def test_missing_function_exits_2_and_lists_what_exists():
    p = run_worker(["funcs:shape"], framed({"id": 1}))
    assert p.returncode == 2 and p.stdout == b""
    msg = one_line_error(p)
    assert "module `funcs` has no function `shape`" in msg
    assert "shapes" in msg


def test_not_a_function_exits_2():
    p = run_worker(["funcs:NOT_A_FUNCTION"], b"")
    assert p.returncode == 2
    assert "is not callable (it is of type int)" in one_line_error(p)


def test_a_missing_dependency_of_the_module_is_named():
    p = run_worker(["imports_missing:fn"], framed({"id": 1}))
    assert p.returncode == 2 and p.stdout == b""
    msg = one_line_error(p)
    assert "importing `imports_missing` failed" in msg
    assert "a_module_that_is_not_installed" in msg


def test_a_spec_without_function_exits_2():
    p = run_worker(["funcs"], b"")
    assert p.returncode == 2
    assert "expected MODULE:FUNCTION" in one_line_error(p)


def test_setup_runs_once_per_worker():
    p = run_worker(
        ["funcs:after_setup", "--setup", "funcs:record_setup"],
        framed({"id": 1}, {"id": 2}),
        env=worker_env(HERDSMAN_WORKER="4"),
    )
    assert p.returncode == 0, p.stderr.decode()
    assert replies(p.stdout) == [
        {"id": 0, "output": {"id": 1, "setup_calls": 1}, "done": True},
        {"id": 1, "output": {"id": 2, "setup_calls": 1}, "done": True},
    ]
    err = p.stderr.decode()
    assert err.count("SETUP-CALLED") == 1
    assert "setup ran in worker 4" in err, "setup's print went to stderr"


def test_a_failing_setup_exits_1_with_one_clear_line():
    p = run_worker(["funcs:echo", "--setup", "funcs:failing_setup"], framed({"id": 1}))
    assert p.returncode == 1 and p.stdout == b""
    assert "the setup function failed (RuntimeError: the model file is missing)" in one_line_error(p)


def test_a_missing_setup_function_exits_2():
    p = run_worker(["funcs:echo", "--setup", "funcs:nope"], framed({"id": 1}))
    assert p.returncode == 2 and p.stdout == b""
    assert "has no setup function `nope`" in one_line_error(p)


def test_lines_protocol_from_the_environment_and_the_flag():
    data = b'{"id":1,"value":"a"}\n{"id":2,"value":"b"}\n'
    want = [{"id": 1, "value": "a"}, {"id": 2, "value": "b"}]
    p = run_worker(["funcs:shapes"], data, env=worker_env(HERDSMAN_PROTOCOL="lines"))
    assert p.returncode == 0, p.stderr.decode()
    assert replies(p.stdout) == want
    p = run_worker(["--protocol", "lines", "funcs:shapes"], data)
    assert p.returncode == 0, p.stderr.decode()
    assert replies(p.stdout) == want


def test_lines_protocol_exits_nonzero_on_a_filter():
    data = b'{"id":1}\n{"kind":"filter"}\n{"id":3}\n'
    p = run_worker(["funcs:shapes"], data, env=worker_env(HERDSMAN_PROTOCOL="lines"))
    assert p.returncode == 1
    assert replies(p.stdout) == [{"id": 1, "value": None}]
    assert "returned None" in one_line_error(p)


def test_lines_requests_sent_to_a_framed_worker_say_what_to_change():
    p = run_worker(["funcs:echo"], b'{"id":"1","value":"17"}\n')
    assert p.returncode == 2 and p.stdout == b""
    msg = one_line_error(p)
    assert "expected a framed request" in msg and "--protocol framed" in msg


def test_worker_id_comes_from_the_environment():
    p = run_worker(["funcs:who"], framed({"id": 1}), env=worker_env(HERDSMAN_WORKER="2"))
    assert replies(p.stdout) == [{"id": 0, "output": {"id": 1, "worker": 2}, "done": True}]


def test_serve_in_a_script(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(
        "import herdsman_worker\n"
        "def double(record):\n"
        "    print('working')\n"
        "    return {'twice': record['n'] * 2}\n"
        "if __name__ == '__main__':\n"
        "    herdsman_worker.serve(double)\n"
    )
    import subprocess
    import sys

    p = subprocess.run(
        [sys.executable, str(script)],
        input=framed({"n": 2}),
        capture_output=True,
        env=worker_env(),
        timeout=60,
    )
    assert p.returncode == 0, p.stderr.decode()
    assert replies(p.stdout) == [{"id": 0, "output": {"twice": 4}, "done": True}]
    assert "working" in p.stderr.decode()


def test_a_big_record_through_real_pipes():
    big = "é" * (6 * 1024 * 1024)
    p = run_worker(["funcs:echo"], framed({"big": big}, {"small": 1}))
    assert p.returncode == 0, p.stderr.decode()[-2000:]
    assert replies(p.stdout) == [
        {"id": 0, "output": {"big": big}, "done": True},
        {"id": 1, "output": {"small": 1}, "done": True},
    ]


def test_start_up_imports_only_what_serving_needs():
    # argparse (with gettext and shutil behind it) and traceback cost a worker process
    # milliseconds of start-up each; they are imported only for help, a mistake or a failure.
    # (What the interpreter itself imports at start-up, through site, does not count.)
    bare = subprocess.run(
        [sys.executable, "-c", "import sys, funcs; print(funcs.start_up_imports(None)['imported'])"],
        capture_output=True, cwd=WORKERS, env=worker_env(), check=True,
    )
    baseline = set(json.loads(bare.stdout.decode().replace("'", '"')))
    for args in (["funcs:start_up_imports"], ["funcs:start_up_imports", "--protocol", "framed"],
                 ["--setup=funcs:record_setup", "funcs:start_up_imports"]):
        p = run_worker(args, framed({"id": 1}))
        assert p.returncode == 0, p.stderr.decode()
        [reply] = replies(p.stdout)
        assert set(reply["output"]["imported"]) - baseline == set(), args


@pytest.mark.parametrize(
    "argv",
    [
        ["m:f"],
        ["m:f", "--setup", "m:s"],
        ["--setup=m:s", "m:f"],
        ["m:f", "--protocol", "lines"],
        ["--protocol=framed", "--setup", "m:s", "m:f"],
    ],
)
def test_the_quick_argument_reader_agrees_with_argparse(argv):
    from herdsman_worker.__main__ import _parse, _quick_parse

    assert _quick_parse(argv) == _parse(argv)


@pytest.mark.parametrize(
    "argv",
    [[], ["--help"], ["--version"], ["m:f", "g:h"], ["m:f", "--setup"], ["m:f", "--set", "x"],
     ["m:f", "--protocol", "bogus"], ["m:f", "--setup", "a:b", "--setup", "c:d"], ["-x"], ["m:f", "--setup="]],
)
def test_anything_unusual_goes_to_argparse(argv):
    from herdsman_worker.__main__ import _quick_parse

    assert _quick_parse(argv) is None

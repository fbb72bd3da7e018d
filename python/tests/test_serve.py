"""Unit tests of the serve loop with in-memory streams."""

import datetime
import io
import json

import pytest

import herdsman_worker
from herdsman_worker import Retryable, serve


def requests(*records, start=0):
    return b"".join(
        json.dumps({"id": start + i, "record": r}).encode() + b"\n" for i, r in enumerate(records)
    )


def run(fn, data, **kwargs):
    out = io.BytesIO()
    serve(fn, input=io.BytesIO(data), output=out, **kwargs)
    return out.getvalue()


def replies(raw):
    text = raw.decode("utf-8")
    assert text == "" or text.endswith("\n"), "every reply ends with a newline"
    # Split on "\n" only: a reply may hold U+2028, which str.splitlines() splits on.
    return [json.loads(line) for line in text.split("\n")[:-1]]


# --- reply shapes ----------------------------------------------------------------------


def test_a_dict_is_one_output_with_done():
    raw = run(lambda r: {"n": int(r["value"]) * 2}, requests({"value": "21"}))
    assert raw == b'{"id":0,"output":{"n":42},"done":true}\n'


@pytest.mark.parametrize(
    "value",
    ["text", 7, 2.5, True, False, {"nested": {"a": [1, None]}}, {}],
)
def test_any_json_value_is_one_output(value):
    assert replies(run(lambda r: value, requests({}))) == [{"id": 0, "output": value, "done": True}]


def test_a_tuple_is_one_array_value():
    assert replies(run(lambda r: (1, "a"), requests({}))) == [
        {"id": 0, "output": [1, "a"], "done": True}
    ]


def test_none_filters_the_record():
    assert run(lambda r: None, requests({"a": 1})) == b'{"id":0,"done":true}\n'


def test_a_list_explodes_into_outputs():
    raw = run(lambda r: [{"w": w} for w in r["text"].split()], requests({"text": "a b c"}))
    assert replies(raw) == [
        {"id": 0, "output": {"w": "a"}},
        {"id": 0, "output": {"w": "b"}},
        {"id": 0, "output": {"w": "c"}},
        {"id": 0, "done": True},
    ]


def test_an_empty_list_filters_the_record():
    assert run(lambda r: [], requests({})) == b'{"id":0,"done":true}\n'


def test_a_wrapped_list_is_one_output():
    raw = run(lambda r: [r["tags"]], requests({"tags": ["x", "y"]}))
    assert replies(raw) == [{"id": 0, "output": ["x", "y"]}, {"id": 0, "done": True}]


def test_a_wrapped_none_outputs_json_null():
    assert replies(run(lambda r: [None], requests({}))) == [
        {"id": 0, "output": None},
        {"id": 0, "done": True},
    ]


def test_a_generator_explodes():
    def gen(record):
        for i in range(record["n"]):
            yield i

    assert replies(run(gen, requests({"n": 2}, {"n": 0}))) == [
        {"id": 0, "output": 0},
        {"id": 0, "output": 1},
        {"id": 0, "done": True},
        {"id": 1, "done": True},
    ]


def test_ids_are_echoed_and_unknown_request_fields_ignored():
    data = b'{"id":41,"record":1,"attempt":3}\r\n\n   \n{"record":2,"id":9000000000}\n'
    assert replies(run(lambda r: r, data)) == [
        {"id": 41, "output": 1, "done": True},
        {"id": 9000000000, "output": 2, "done": True},
    ]


def test_the_last_request_needs_no_newline():
    assert replies(run(lambda r: r, b'{"id":3,"record":"x"}')) == [
        {"id": 3, "output": "x", "done": True}
    ]


def test_no_input_no_output():
    assert run(lambda r: r, b"") == b""


# --- unicode and big records -------------------------------------------------------------


def test_unicode_round_trips_as_utf8():
    text = "héllo wörld – 日本語 😀 \u2028 \"quoted\" \\ tab\t"
    raw = run(lambda r: {"t": r["t"], "len": len(r["t"])}, requests({"t": text}))
    assert "日本語 😀".encode("utf-8") in raw, "UTF-8 is written as it is, not escaped"
    assert replies(raw) == [{"id": 0, "output": {"t": text, "len": len(text)}, "done": True}]


def test_a_lone_surrogate_is_escaped_not_a_crash():
    raw = run(lambda r: {"t": "\ud800"}, requests({}))
    assert raw == b'{"id":0,"output":{"t":"\\ud800"},"done":true}\n'


def test_big_records_in_and_out():
    big = "x" * (8 * 1024 * 1024)
    raw = run(lambda r: {"len": len(r["big"]), "echo": r["big"]}, requests({"big": big}, {"big": "y"}))
    got = replies(raw)
    assert got[0]["output"]["len"] == len(big)
    assert got[0]["output"]["echo"] == big
    assert got[1] == {"id": 1, "output": {"len": 1, "echo": "y"}, "done": True}


def test_many_records_keep_their_order_and_ids():
    n = 5000
    raw = run(lambda r: {"sq": r * r}, requests(*range(n)))
    got = replies(raw)
    assert got == [{"id": i, "output": {"sq": i * i}, "done": True} for i in range(n)]


# --- print() isolation -------------------------------------------------------------------


def test_print_in_user_code_goes_to_stderr(capsys):
    import sys

    def loud(record):
        print("user print", record)
        sys.stdout.write("user write\n")
        return {"ok": True}

    raw = run(loud, requests(1, 2))
    assert replies(raw) == [
        {"id": 0, "output": {"ok": True}, "done": True},
        {"id": 1, "output": {"ok": True}, "done": True},
    ]
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "user print 1" in captured.err and "user print 2" in captured.err
    assert "user write" in captured.err


def test_stdout_is_restored_after_serving():
    import sys

    before = sys.stdout
    run(lambda r: r, requests(1))
    assert sys.stdout is before


# --- failures ----------------------------------------------------------------------------


def test_an_exception_fails_the_record_for_good(capsys):
    def fn(record):
        if record == 2:
            raise ValueError("value must be odd, got 2")
        return record

    assert replies(run(fn, requests(1, 2, 3))) == [
        {"id": 0, "output": 1, "done": True},
        {"id": 1, "error": "ValueError: value must be odd, got 2", "retryable": False},
        {"id": 2, "output": 3, "done": True},
    ]
    err = capsys.readouterr().err
    assert "Traceback" in err and "value must be odd" in err


def test_an_exception_without_message_names_its_type():
    def fn(record):
        raise KeyError

    assert replies(run(fn, requests(1))) == [{"id": 0, "error": "KeyError", "retryable": False}]


def test_an_exception_inside_a_generator_fails_the_record():
    def gen(record):
        yield 1
        raise RuntimeError("half way")

    assert replies(run(gen, requests(0))) == [
        {"id": 0, "error": "RuntimeError: half way", "retryable": False}
    ]


def test_retryable_fails_the_record_retryably():
    def fn(record):
        raise Retryable("HTTP 503 from the API")

    assert run(fn, requests(1)) == (
        b'{"id":0,"error":"HTTP 503 from the API","retryable":true}\n'
    )


def test_retryable_carries_retry_after_in_seconds():
    def fn(record):
        if record == 0:
            raise Retryable("HTTP 429", retry_after=3)
        raise Retryable("slow down", retry_after=datetime.timedelta(milliseconds=1500))

    assert replies(run(fn, requests(0, 1))) == [
        {"id": 0, "error": "HTTP 429", "retryable": True, "retry_after": 3.0},
        {"id": 1, "error": "slow down", "retryable": True, "retry_after": 1.5},
    ]


def test_retryable_without_message_still_says_something():
    def fn(record):
        raise Retryable()

    assert replies(run(fn, requests(1)))[0]["error"] == "retryable error"


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "soon"])
def test_retryable_rejects_a_bad_retry_after(bad):
    with pytest.raises((ValueError, TypeError)):
        Retryable("x", retry_after=bad)


@pytest.mark.parametrize(
    "value, words",
    [({1, 2}, "not JSON serializable"), (float("nan"), "not JSON compliant"), ([object()], "object")],
)
def test_a_value_that_is_not_json_fails_the_record(value, words):
    got = replies(run(lambda r: value, requests(1)))
    assert len(got) == 1 and got[0]["retryable"] is False
    assert "not JSON" in got[0]["error"] and words in got[0]["error"]


def test_keyboard_interrupt_and_system_exit_are_not_swallowed():
    def fn(record):
        raise SystemExit(7)

    with pytest.raises(SystemExit) as exit_info:
        run(fn, requests(1))
    assert exit_info.value.code == 7


# --- protocol errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [b'{"id":"1","value":"17"}\n', b"not json\n", b'{"id":-1,"record":1}\n', b'{"id":1.5,"record":1}\n', b"[1,2]\n"],
)
def test_a_request_that_is_not_framed_exits_2_after_earlier_answers(line, capsys):
    out = io.BytesIO()
    with pytest.raises(SystemExit) as exit_info:
        serve(lambda r: r, input=io.BytesIO(requests(1) + line + requests(2, start=5)), output=out)
    assert exit_info.value.code == 2
    assert out.getvalue() == b'{"id":0,"output":1,"done":true}\n'
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("herdsman_worker: expected a framed request")
    assert "--protocol framed" in err[0]


# --- flushing ------------------------------------------------------------------------------


class TrickleInput(io.RawIOBase):
    """Gives one line per read and remembers how much output had been flushed by then."""

    def __init__(self, lines, sink):
        self.lines = list(lines)
        self.sink = sink
        self.flushed_at_read = []

    def readline(self, size=-1):
        self.flushed_at_read.append(len(self.sink.flushed))
        return self.lines.pop(0) if self.lines else b""


class RecordingOutput:
    def __init__(self):
        self.pending = b""
        self.flushed = b""

    def write(self, data):
        self.pending += data
        return len(data)

    def flush(self):
        self.flushed += self.pending
        self.pending = b""


def test_every_answer_is_flushed_before_the_next_request_is_read():
    sink = RecordingOutput()
    lines = requests("a", "b", "c").splitlines(keepends=True)
    source = TrickleInput(lines, sink)
    serve(lambda r: [r, r], input=source, output=sink)
    one = len(b'{"id":0,"output":"a"}\n{"id":0,"output":"a"}\n{"id":0,"done":true}\n')
    assert source.flushed_at_read == [0, one, 2 * one, 3 * one]
    assert sink.pending == b""


# --- setup -----------------------------------------------------------------------------------


def test_setup_runs_once_before_the_first_request(capsys):
    calls = []
    sink = RecordingOutput()
    source = TrickleInput(requests(1, 2).splitlines(keepends=True), sink)

    def setup():
        calls.append(len(source.flushed_at_read))
        print("loading the model")

    serve(lambda r: r, input=source, output=sink, setup=setup)
    assert calls == [0], "setup ran once, before any request was read"
    assert "loading the model" in capsys.readouterr().err


def test_a_failing_setup_exits_1_before_reading(capsys):
    source = TrickleInput(requests(1).splitlines(keepends=True), RecordingOutput())

    def setup():
        raise OSError("cannot open model.bin")

    with pytest.raises(SystemExit) as exit_info:
        serve(lambda r: r, input=source, output=RecordingOutput(), setup=setup)
    assert exit_info.value.code == 1
    assert source.flushed_at_read == []
    assert "the setup function failed (OSError: cannot open model.bin)" in capsys.readouterr().err


# --- the lines protocol ------------------------------------------------------------------------


def lines_run(fn, data, **kwargs):
    return run(fn, data, protocol="lines", **kwargs)


def test_lines_one_json_line_per_line():
    data = b'{"a":1}\n\n{"a":2}\r\n"x"\n'
    assert lines_run(lambda r: {"r": r}, data) == b'{"r":{"a":1}}\n{"r":{"a":2}}\n{"r":"x"}\n'


def test_lines_is_chosen_by_the_environment(monkeypatch):
    monkeypatch.setenv("HERDSMAN_PROTOCOL", "lines")
    assert run(lambda r: r["a"], b'{"a":"\xc3\xa9"}\n') == '"é"\n'.encode()


def test_an_unknown_protocol_in_the_environment_exits_2(monkeypatch, capsys):
    monkeypatch.setenv("HERDSMAN_PROTOCOL", "frame")
    with pytest.raises(SystemExit) as exit_info:
        run(lambda r: r, b"1\n")
    assert exit_info.value.code == 2
    assert "unknown HERDSMAN_PROTOCOL 'frame'" in capsys.readouterr().err


def test_lines_a_one_element_list_is_its_element():
    assert lines_run(lambda r: [[r, r]], b"1\n") == b"[1,1]\n"


@pytest.mark.parametrize(
    "fn, words",
    [
        (lambda r: None if r == 2 else r, "returned None"),
        (lambda r: [r, r] if r == 2 else r, "returned 2 outputs"),
        (lambda r: [] if r == 2 else r, "returned 0 outputs"),
        (lambda r: 1 / (r - 2), "ZeroDivisionError"),
        (lambda r: {r} if r == 2 else r, "not JSON"),
    ],
)
def test_lines_cannot_filter_explode_or_fail_so_the_worker_exits(fn, words, capsys):
    out = io.BytesIO()
    with pytest.raises(SystemExit) as exit_info:
        serve(fn, input=io.BytesIO(b"3\n2\n4\n"), output=out, protocol="lines")
    assert exit_info.value.code == 1
    assert len(out.getvalue().splitlines()) == 1, "the answer before it went out"
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("herdsman_worker: ") and words in last
    assert "--protocol framed" in last


def test_lines_input_that_is_not_json_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        lines_run(lambda r: r, b"{oops\n")
    assert exit_info.value.code == 2
    assert "cannot read a record as JSON" in capsys.readouterr().err


# --- worker_id ---------------------------------------------------------------------------------


def test_worker_id(monkeypatch):
    assert herdsman_worker.worker_id() is None
    monkeypatch.setenv("HERDSMAN_WORKER", "3")
    assert herdsman_worker.worker_id() == 3
    monkeypatch.setenv("HERDSMAN_WORKER", "")
    assert herdsman_worker.worker_id() is None

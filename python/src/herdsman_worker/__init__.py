"""Serve a plain Python function as a herdsman worker.

From the command line, with no code to write around the function::

    herdsman run -i in.csv -o out.jsonl --protocol framed \\
        -w 'python3 -m herdsman_worker mymodule:transform'

or from a script::

    import herdsman_worker

    def transform(record):
        return {"id": record["id"], "n": len(record["text"])}

    if __name__ == "__main__":
        herdsman_worker.serve(transform)

What the function returns becomes the record's outputs (framed protocol, the default):

- a dict, or any other JSON value (str, number, bool, tuple) -> one output record;
- ``None`` -> no output: the record counts as filtered;
- a list (or a generator) -> one output per element (an empty list filters the record);
  to output a list as one value, wrap it: ``return [my_list]``.

Raising fails the record: :class:`Retryable` says another attempt could succeed, any other
exception fails it for good (its type and message go to the dead-letter file, its
traceback to the worker's stderr).

While the function runs, ``sys.stdout`` is redirected to stderr, so ``print()`` never
corrupts the protocol; replies are written to the real standard output and flushed after
every record. The wire formats are specified in herdsman's ``docs/protocol.md``.
"""

import json
import os
import sys
import types

__all__ = ["serve", "Retryable", "worker_id", "__version__"]

__version__ = "0.1.0"

PROTOCOLS = ("framed", "lines")

# The hot path: compact JSON, UTF-8 kept as it is, and no NaN/Infinity (not JSON).
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
_dumps_ascii = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode
_loads = json.loads


def _print_exc():
    """The current exception's traceback on stderr.

    ``traceback`` is imported on the first failure only: a worker that never fails does not
    pay for it at start-up.
    """
    import traceback

    traceback.print_exc(file=sys.stderr)


def _not_serializable(value):
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _fast_json():
    """The C encoder and scanner behind the json module, called directly.

    ``JSONEncoder.encode`` builds a new C encoder on every call and ``json.loads`` runs a
    Python-level regex around the C scanner; calling them directly is several times
    faster per record. Falls back to the public functions where the C parts are missing.
    """
    try:
        from json import encoder as enc

        make = enc.c_make_encoder
        c_dumps = make(None, _not_serializable, enc.c_encode_basestring, None, ":", ",",
                       False, False, False)
        join = "".join

        def dumps(value):
            return join(c_dumps(value, 0))

        scan = json.JSONDecoder().scan_once
        sample = {"a": [1, 2.5, None, True, "\u00e9\u2028"], "b": {}}
        if dumps(sample) != _dumps(sample) or scan(_dumps(sample), 0)[0] != sample:
            raise ValueError("the C json functions behave differently")
        return dumps, scan
    except Exception:  # noqa: BLE001 - any surprise: use the public functions
        return _dumps, None


_dumps_fast, _scan_once = _fast_json()
_GeneratorType = types.GeneratorType


class Retryable(Exception):
    """Raise it to fail a record in a way that another attempt could fix.

    ``retry_after`` (seconds, a number or a ``datetime.timedelta``) is how long to wait
    before the next attempt, for example from an HTTP ``Retry-After`` header. It is sent to
    herdsman as the reply's ``retry_after`` field: herdsman waits that long (at most an
    hour) instead of its ``--backoff``, and pauses its ``--rate`` limit for every record
    meanwhile.

    >>> raise Retryable("the service answered 503", retry_after=2.5)
    Traceback (most recent call last):
    ...
    herdsman_worker.Retryable: the service answered 503
    """

    def __init__(self, message="", retry_after=None):
        super().__init__(message)
        if retry_after is not None:
            seconds = getattr(retry_after, "total_seconds", None)
            retry_after = float(seconds() if seconds is not None else retry_after)
            if not retry_after >= 0 or retry_after == float("inf"):
                raise ValueError(
                    f"retry_after must be a finite number of seconds >= 0, got {retry_after!r}"
                )
        self.retry_after = retry_after


def worker_id():
    """This worker's number in herdsman's pool (from ``HERDSMAN_WORKER``), or None.

    Returns None when the variable is unset or is not an integer (for example when the
    function runs outside herdsman).
    """
    value = os.environ.get("HERDSMAN_WORKER")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


class WorkerExit(SystemExit):
    """The worker cannot go on: a protocol mismatch, or a record the lines protocol cannot
    answer. The message has already been written to stderr."""


def _die(code, message):
    sys.stderr.write(f"herdsman_worker: {message}\n")
    sys.stderr.flush()
    raise WorkerExit(code)


def _protocol_from(protocol):
    if protocol is None:
        protocol = os.environ.get("HERDSMAN_PROTOCOL") or "framed"
        where = "HERDSMAN_PROTOCOL"
    else:
        where = "protocol"
    if protocol not in PROTOCOLS:
        _die(2, f"unknown {where} {protocol!r}; use 'framed' or 'lines'")
    return protocol


def _error_message(err):
    text = str(err)
    name = type(err).__name__
    return f"{name}: {text}" if text else name


def _encode(value):
    """Compact JSON bytes of one output value; TypeError/ValueError if it is not JSON."""
    try:
        return _dumps_fast(value).encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates cannot be UTF-8: write them as \\u escapes instead.
        return _dumps_ascii(value).encode("ascii")


def _error_reply(rid, message, retryable, retry_after=None):
    reply = b'{"id":%d,"error":%s,"retryable":%s' % (
        rid,
        _encode(message),
        b"true" if retryable else b"false",
    )
    if retry_after is not None:
        reply += b',"retry_after":' + repr(retry_after).encode("ascii")
    return reply + b"}\n"


def _framed_reply(fn, rid, record):
    """The reply bytes of one framed record: its outputs and done, or an error."""
    try:
        result = fn(record)
        if type(result) is _GeneratorType:
            result = list(result)
    except Retryable as err:
        return _error_reply(rid, str(err) or "retryable error", True, err.retry_after)
    except Exception as err:  # noqa: BLE001 - every failure of user code is reported
        _print_exc()
        return _error_reply(rid, _error_message(err), False)
    try:
        if result is None:
            return b'{"id":%d,"done":true}\n' % rid
        if isinstance(result, list):
            parts = [b'{"id":%d,"output":%s}\n' % (rid, _encode(v)) for v in result]
            parts.append(b'{"id":%d,"done":true}\n' % rid)
            return b"".join(parts)
        return b'{"id":%d,"output":%s,"done":true}\n' % (rid, _dumps_fast(result).encode())
    except UnicodeEncodeError:
        return b'{"id":%d,"output":%s,"done":true}\n' % (rid, _encode(result))
    except (TypeError, ValueError, RecursionError) as err:
        return _error_reply(rid, _not_json(err), False)


def _not_json(err):
    return (
        f"the function returned a value that is not JSON ({err}); return dicts, lists, "
        "strings, numbers, booleans or None"
    )


def _bad_request(line):
    shown = line[:200].decode("utf-8", "replace").strip()
    _die(
        2,
        f"expected a framed request like {{\"id\":7,\"record\":{{...}}}} but read {shown}; "
        "run herdsman with --protocol framed (or set HERDSMAN_PROTOCOL=lines to serve "
        "the lines protocol)",
    )


def _framed_request(line):
    """(id, record) of a request line, None for a blank line; exits on anything else."""
    try:
        request = _loads(line)
        rid = request["id"]
        record = request["record"]
    except (ValueError, KeyError, TypeError, IndexError):
        if line.strip():
            _bad_request(line)
        return None
    if type(rid) is not int or rid < 0:
        _bad_request(line)
    return rid, record


def _serve_framed(fn, readline, send):
    scan = _scan_once
    reply_for = _framed_reply
    slow = _framed_request
    while True:
        line = readline()
        if not line:
            return
        if scan is not None:
            # The fast path for what herdsman sends: one compact JSON object per line.
            try:
                text = line.decode()
                request, end = scan(text, 0)
                rid = request["id"]
                record = request["record"]
                # What herdsman sends ends right after the object, with one newline.
                ok = (
                    type(rid) is int
                    and rid >= 0
                    and (
                        (end == len(text) - 1 and text[end] == "\n")
                        or end == len(text)
                        or text[end:].isspace()
                    )
                )
            except Exception:  # noqa: BLE001 - the slow path says what is wrong
                ok = False
            if ok:
                send(reply_for(fn, rid, record))
                continue
        request = slow(line)
        if request is not None:
            send(reply_for(fn, *request))


def _lines_value(fn, record):
    """The one output of a lines record, or exit: the lines protocol has no way to filter,
    explode or fail a record."""
    try:
        result = fn(record)
        if isinstance(result, list) or type(result) is _GeneratorType:
            result = list(result)
            if len(result) != 1:
                _die(
                    1,
                    f"the function returned {len(result)} outputs for a record, but the lines "
                    "protocol needs exactly one; run herdsman with --protocol framed to "
                    "filter or explode records (to output a list as one value, return "
                    "[the_list])",
                )
            result = result[0]
        elif result is None:
            _die(
                1,
                "the function returned None (filter the record), which the lines protocol "
                "cannot express; run herdsman with --protocol framed to filter records",
            )
    except Exception as err:  # noqa: BLE001
        _print_exc()
        _die(
            1,
            f"the function failed on a record ({_error_message(err)}); the lines protocol "
            "cannot report a failed record, so the worker exits and herdsman fails that "
            "record; run herdsman with --protocol framed to report failures per record",
        )
    try:
        return _encode(result)
    except (TypeError, ValueError, RecursionError) as err:
        _die(
            1,
            _not_json(err) + "; the worker exits, since the lines protocol cannot report a "
            "failed record (run herdsman with --protocol framed to report it)",
        )


def _serve_lines(fn, readline, send):
    loads = _loads
    while True:
        line = readline()
        if not line:
            return
        try:
            record = loads(line)
        except ValueError:
            if not line.strip():
                continue
            shown = line[:200].decode("utf-8", "replace").strip()
            _die(2, f"cannot read a record as JSON: {shown}")
        send(_lines_value(fn, record) + b"\n")


def _fd_sender(fd):
    write = os.write

    def send(data):
        # One write per reply; a pipe may take a big reply in several parts.
        n = write(fd, data)
        if n != len(data):
            view = memoryview(data)
            while n < len(data):
                n += write(fd, view[n:])

    return send


def _stream_sender(stream):
    write = stream.write
    flush = stream.flush

    def send(data):
        write(data)
        flush()

    return send


class _StdioGuard:
    """Moves the protocol off file descriptors 0 and 1 so that user code cannot touch it.

    The protocol keeps private duplicates of stdin and stdout; descriptor 1 then points to
    stderr (so ``print``, C extensions and child processes write logs, not replies), and
    descriptor 0 reads /dev/null (so a child process cannot swallow requests).
    """

    def __init__(self):
        for stream in (sys.stdout, sys.__stdout__):
            try:
                if stream is not None:
                    stream.flush()
            except (OSError, ValueError):
                pass
        self.proto_in = os.dup(0)
        self.proto_out = os.dup(1)
        os.dup2(2, 1)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        self.input = open(self.proto_in, "rb", buffering=1 << 16)
        self.send = _fd_sender(self.proto_out)


_guard = None


def protect_stdio():
    """Moves the protocol off stdin and stdout (once per process) and returns the guard.

    ``python -m herdsman_worker`` calls it before it imports the function's module, so
    that even prints at import time go to stderr.
    """
    global _guard
    if _guard is None:
        _guard = _StdioGuard()
    return _guard


def serve(fn, *, protocol=None, setup=None, input=None, output=None):
    """Answer herdsman's requests with ``fn`` until the end of input.

    ``fn(record)`` gets each record (a dict for CSV input) and returns its outputs (see the
    module documentation). ``protocol`` is ``"framed"`` or ``"lines"``; by default it comes
    from the environment variable ``HERDSMAN_PROTOCOL``, else ``"framed"``. ``setup``, if
    given, is called once with no arguments before the first request is read.

    ``input`` and ``output`` are binary streams (default: the process's standard input and
    output, which are then guarded so that user code cannot write to the protocol stream).

    Returns at the end of input. A request that cannot be read, or a record that the lines
    protocol cannot answer, writes one line to stderr and raises ``SystemExit`` (status 2
    for a protocol mismatch, 1 for a record).
    """
    protocol = _protocol_from(protocol)
    if input is None or output is None:
        guard = protect_stdio()
    if input is None:
        input = guard.input
    send = guard.send if output is None else _stream_sender(output)
    saved_stdout = sys.stdout
    sys.stdout = sys.stderr
    try:
        if setup is not None:
            try:
                setup()
            except Exception as err:  # noqa: BLE001
                _print_exc()
                _die(
                    1,
                    f"the setup function failed ({_error_message(err)}); the worker exits "
                    "before reading any record",
                )
        loop = _serve_framed if protocol == "framed" else _serve_lines
        loop(fn, input.readline, send)
    finally:
        sys.stdout = saved_stdout

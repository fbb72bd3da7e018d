"""Write a herdsman worker in Python with one decorator (standard library only).

    from herdsman_worker import worker, Retryable

    @worker
    def handle(record):
        if not record.get("url"):
            return None                      # filtered: no output
        if record["kind"] == "pair":
            yield from ...                   # a generator: zero, one or many outputs
        return {"id": record["id"], ...}     # one output record

    if __name__ == "__main__":
        handle.serve()                       # framed protocol (herdsman --protocol framed)

What the function returns becomes the record's outputs:
  - a value (dict, list, str, number, bool)  -> one output record;
  - None                                      -> no output (the record is filtered out);
  - a generator (the function uses `yield`)   -> one output per yielded value;
  - Outputs([...])                            -> exactly those outputs (use Outputs([None])
                                                 to emit a JSON null).
An exception fails the record: `raise Retryable("...")` marks it worth retrying (timeouts,
throttling); any other exception is reported with its type and message, not retryable.

`handle.serve(protocol="lines")` speaks the lines protocol instead (herdsman's default):
the function must return exactly one value per record, and an exception ends the worker
(herdsman charges that record, restarts the worker and re-sends the others).

The protocols are specified in docs/protocol.md. Replies are flushed once per chunk read
from stdin: a busy pipe costs one write per chunk, and a lone request is answered at once.
Logs belong on stderr (`print(..., file=sys.stderr)`); stdout carries only replies.
"""

import inspect
import json
import os
import sys
import traceback
import types

__all__ = ["worker", "Retryable", "Outputs", "serve"]

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class Retryable(Exception):
    """Raise it to fail a record in a way that another attempt could fix."""


class Outputs(list):
    """An explicit list of output records (possibly empty, possibly containing None)."""


def _outputs(result):
    if result is None:
        return []
    if isinstance(result, Outputs):
        return list(result)
    if isinstance(result, types.GeneratorType):
        return list(result)
    return [result]


def _framed_reply(fn, line):
    try:
        request = json.loads(line)
        rid = request["id"]
        record = request["record"]
    except (ValueError, KeyError, TypeError) as err:
        # Without an id nothing can be answered: a protocol violation, so stop loudly.
        sys.stderr.write(f"herdsman_worker: cannot read request {line[:200]!r}: {err}\n")
        sys.exit(2)
    try:
        outputs = _outputs(fn(record))
    except Retryable as err:
        return _dumps({"id": rid, "error": str(err) or "retryable error", "retryable": True}) + "\n"
    except Exception as err:  # noqa: BLE001 - every failure of user code is reported
        traceback.print_exc(file=sys.stderr)
        message = f"{type(err).__name__}: {err}"
        return _dumps({"id": rid, "error": message, "retryable": False}) + "\n"
    parts = [_dumps({"id": rid, "output": out}) for out in outputs]
    parts.append(_dumps({"id": rid, "done": True}))
    return "\n".join(parts) + "\n"


def _lines_reply(fn, line):
    record = json.loads(line)
    result = fn(record)
    if isinstance(result, types.GeneratorType):
        result = list(result)
        if len(result) != 1:
            raise ValueError(
                f"the lines protocol needs exactly one output per record, got {len(result)}; "
                "use the framed protocol to filter or explode records"
            )
        result = result[0]
    return _dumps(result) + "\n"


def serve(fn, protocol="framed", stdin_fd=0, stdout=None):
    """Answer requests from stdin with `fn` until end of input."""
    if protocol not in ("framed", "lines"):
        raise ValueError(f"unknown protocol {protocol!r}; use 'framed' or 'lines'")
    reply = _framed_reply if protocol == "framed" else _lines_reply
    out = stdout or sys.stdout

    def answer_all(lines):
        answers = []
        try:
            for line in lines:
                if line.strip():
                    answers.append(reply(fn, line))
        finally:
            # Even when a record ends the worker, the answers before it go out first, so
            # herdsman charges the right record.
            out.write("".join(answers))
            out.flush()

    pending = b""
    while True:
        chunk = os.read(stdin_fd, 1 << 16)
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        answer_all(lines)
    answer_all([pending])


def worker(fn):
    """Mark `fn(record)` as a herdsman worker; call `fn.serve()` to run the loop."""

    def serve_this(protocol="framed"):
        serve(fn, protocol)

    fn.serve = serve_this
    fn.is_generator = inspect.isgeneratorfunction(fn)
    return fn


if __name__ == "__main__":
    # A demonstration worker: splits the record's "text" field into words.
    @worker
    def words(record):
        text = record.get("text") if isinstance(record, dict) else None
        if not isinstance(text, str):
            raise ValueError("the record has no string field 'text'")
        for word in text.split():
            yield {"word": word}

    words.serve(sys.argv[1] if len(sys.argv) > 1 else "framed")

"""The worker process of ``executor="process"``.

It runs as a script (``python -S .../herdsman/_worker.py``: starting it imports neither
``site`` nor the ``herdsman`` package) and speaks herdsman's ``framed`` protocol
(docs/protocol.md) on stdin/stdout. Each record is a JSON string holding base64 of a pickled item; each answer is a JSON string holding base64
of the pickled return value, or an error whose message is base64 of a pickled
``(exception, traceback text)`` pair. What to call comes from a setup file: the first
member of every list record is ``"s:<path of the setup file>"``, loaded when it differs
from the last one, so one worker process serves the maps that follow with other functions
(the parent keeps its workers between maps). The setup file holds the function pickled by
reference (module and qualified name, as
pickle does) or by value with cloudpickle, the parent's ``sys.path``, the main script when
the function lives in ``__main__`` (loaded as ``__mp_main__``, as ``multiprocessing``'s
spawn does), and the retry policy's ``on`` types and ``retry_after`` callable.

This module must never write anything but answers to stdout: while the function runs,
``sys.stdout`` is stderr.
"""

import binascii
import os
import sys
import time
import types

# The C pickler alone: `pickle.py` re-exports the same functions but imports `re`, `struct`
# and more, about a third of a worker's start-up.
import _pickle as pickle

#: The protocol the parent pickles with (pickle.HIGHEST_PROTOCOL on Python 3.8+).
PROTOCOL = 5


def _load_main(path):
    """Import the parent's main script as ``__mp_main__`` and alias it as ``__main__``."""
    import runpy

    module = types.ModuleType("__mp_main__")
    previous = sys.modules.get("__main__")
    sys.modules["__mp_main__"] = module
    sys.modules["__main__"] = module
    try:
        globs = runpy.run_path(path, run_name="__mp_main__")
    except BaseException:
        del sys.modules["__mp_main__"]
        sys.modules["__main__"] = previous
        raise
    module.__dict__.update(globs)


def _load_fn(setup):
    """The function to call, as the setup file describes it."""
    if setup.get("main_path") and "__mp_main__" not in sys.modules:
        _load_main(setup["main_path"])
    if setup.get("cloudpickle"):
        import cloudpickle  # noqa: F401  (registers what the pickled function needs)
    return pickle.loads(setup["fn"])


def _dumps_error(exc):
    import traceback

    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        payload = pickle.dumps((exc, tb), protocol=PROTOCOL)
        pickle.loads(payload)  # an exception whose __init__ rejects its args cannot travel
    except Exception:  # noqa: BLE001 - any exception that cannot travel is described instead
        desc = RuntimeError(f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}")
        payload = pickle.dumps((desc, tb), protocol=PROTOCOL)
    return binascii.b2a_base64(payload, newline=False).decode("ascii")


def _retry_verdict(exc, retry_on, retry_after):
    """Whether the retry policy retries this exception, and the wait it asks for."""
    retryable = True if retry_on is None else isinstance(exc, retry_on)
    wait = None
    if retryable and retry_after is not None:
        try:
            wait = retry_after(exc)
        except Exception:  # noqa: BLE001 - a failing extractor means no wait
            wait = None
    return retryable, (None if wait is None else float(wait))


def _load_setup(setup_path):
    """``(fn, retry_on, retry_after)`` from the setup file at ``setup_path``."""
    with open(setup_path, "rb") as f:
        setup = pickle.load(f)
    sys.path[:] = setup["sys_path"]
    try:
        fn = _load_fn(setup)
    except ImportError:
        # Started without `site` (-S): a .pth file may be what makes the function
        # importable (an editable install); process them, then try again.
        import site

        site.main()
        fn = _load_fn(setup)
    return fn, setup.get("retry_on"), setup.get("retry_after")


def main():
    current = None
    fn = retry_on = retry_after = None
    if os.environ.get("HERDSMAN_PY_SETUP"):
        current = os.environ["HERDSMAN_PY_SETUP"]
        fn, retry_on, retry_after = _load_setup(current)

    out = sys.stdout.buffer
    sys.stdout = sys.stderr
    stdin = sys.stdin.buffer
    loads = pickle.loads
    dumps = pickle.dumps
    proto = PROTOCOL
    b64 = binascii.b2a_base64
    unb64 = binascii.a2b_base64
    perf = time.perf_counter

    def one_part(data):
        """One item of a batch: ``o:B64`` or ``e:RETRYABLE:WAIT:B64`` (ASCII bytes)."""
        try:
            value = fn(loads(unb64(data)))
            return b"o:" + b64(dumps(value, proto), newline=False)
        except Exception as exc:  # noqa: BLE001 - every failure is the item's, reported
            retryable, wait = _retry_verdict(exc, retry_on, retry_after)
            return f"e:{int(retryable)}:{'' if wait is None else wait}:{_dumps_error(exc)}".encode("ascii")

    for line in stdin:
        line = line.strip()
        if not line:
            continue
        rid, record = _request(line)
        if isinstance(record, list) and record:
            head = record[0]
            if isinstance(head, bytes):
                head = head.decode("utf-8")
            if head.startswith("s:"):
                # What to call: base64 never holds ':', so an item cannot look like this.
                record = record[1:]
                if head[2:] != current:
                    fn, retry_on, retry_after = _load_setup(head[2:])
                    current = head[2:]
        if isinstance(record, list):
            # A batch of tiny items: one output, a list with one part per item and the
            # worker time it took. Every part is base64 with an ASCII prefix: no escaping.
            t0 = perf()
            parts = [one_part(data) for data in record]
            parts.append(b"t:%.9f" % (perf() - t0))
            out.write(b'{"id":%d,"output":["%s"],"done":true}\n' % (rid, b'","'.join(parts)))
            out.flush()
            continue
        try:
            item = loads(unb64(record))
            value = fn(item)
            payload = b64(dumps(value, proto), newline=False)
            out.write(b'{"id":%d,"output":"%s","done":true}\n' % (rid, payload))
        except Exception as exc:  # noqa: BLE001 - every failure is the item's, reported
            import json

            retryable, wait = _retry_verdict(exc, retry_on, retry_after)
            reply = {"id": rid, "error": _dumps_error(exc), "retryable": retryable}
            if wait is not None:
                reply["retry_after"] = wait
            out.write(json.dumps(reply).encode("ascii") + b"\n")
        out.flush()


def _request(line):
    """``(id, record)`` of one request line: the record is a base64 string or a list of them.

    herdsman writes requests as ``{"id":N,"record":R}``; that shape is read without the
    json module (whose import costs a worker's start-up), anything else with it.
    """
    head = b'{"id":'
    mid = line.find(b',"record":')
    if line.startswith(head) and mid > 0 and line.endswith(b"}"):
        rid = line[len(head):mid]
        record = line[mid + len(b',"record":'):-1]
        if rid.isdigit() and b"\\" not in record:
            if record.startswith(b'["') and record.endswith(b'"]'):
                return int(rid), record[2:-2].split(b'","')
            if record.startswith(b'"') and record.endswith(b'"') and b'"' not in record[1:-1]:
                return int(rid), record[1:-1]
    import json

    req = json.loads(line)
    record = req["record"]
    return req["id"], record


if __name__ == "__main__":
    main()

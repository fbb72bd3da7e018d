#!/usr/bin/env python3
"""herdsman worker for the reference workload, speaking the `framed` protocol.

Run it through herdsman:
    herdsman run -i examples/primes/data.csv -w "python3 examples/primes/worker.py" \
        --protocol framed -o examples/primes/out/primes.jsonl
or by hand, one request per line on stdin:
    echo '{"id":1,"record":{"id":"3","value":"17"}}' | python3 examples/primes/worker.py

For each request {"id":N,"record":{"id":"…","value":"…"}} it answers
    {"id":N,"output":{"id":…,"value":…,"primes_up_to_value":…},"done":true}
or, when id or value is not an integer,
    {"id":N,"error":"…","retryable":false}
and flushes after every answer, as docs/protocol.md asks: herdsman then sees each result as
soon as it exists, and if the worker dies it charges exactly the record being worked on.
Standard library only.
"""
import json
import sys

from primes import compute

dumps = json.JSONEncoder(separators=(",", ":")).encode


def answer(line: bytes) -> str:
    try:
        request = json.loads(line)
        rid = request["id"]
        record = request["record"]
    except (ValueError, KeyError, TypeError) as err:
        # Without a request id there is nothing to answer: this is a protocol violation.
        sys.stderr.write(f"primes worker: cannot read request {line[:200]!r}: {err}\n")
        sys.exit(2)
    try:
        output = compute(record)
    except ValueError as err:
        return dumps({"id": rid, "error": str(err), "retryable": False}) + "\n"
    return dumps({"id": rid, "output": output, "done": True}) + "\n"


def main() -> None:
    out = sys.stdout
    for line in sys.stdin.buffer:
        if line.strip():
            out.write(answer(line))
            out.flush()


if __name__ == "__main__":
    main()

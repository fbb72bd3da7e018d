#!/usr/bin/env python3
"""An example herdsman worker built with herdsman_worker.py (framed protocol).

    herdsman run -i people.csv -w "python3 examples/workers/python/example_worker.py" \
        --protocol framed -o out.jsonl

For each record {"name": ..., "age": ...}:
  - no name          -> filtered out (no output);
  - age not a number -> fails, not retryable;
  - age "retry"      -> fails, retryable (as a flaky service would);
  - tags "a;b;c"     -> one output per tag (explode);
  - otherwise        -> one output with the name upper-cased and the age as a number.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from herdsman_worker import Retryable, worker  # noqa: E402


@worker
def handle(record):
    if not record.get("name"):
        return None
    if record.get("age") == "retry":
        raise Retryable("the age service is busy")
    age = int(record["age"])
    if record.get("tags"):
        return (
            {"name": record["name"], "tag": tag}
            for tag in record["tags"].split(";")
        )
    return {"name": record["name"].upper(), "age": age}


if __name__ == "__main__":
    handle.serve(sys.argv[1] if len(sys.argv) > 1 else "framed")

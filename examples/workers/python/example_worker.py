#!/usr/bin/env python3
"""An example herdsman worker: a plain function served by the herdsman_worker package.

    pip install ./python
    herdsman run -i people.csv -o out.jsonl --protocol framed \\
        -w 'python3 -m herdsman_worker examples/workers/python/example_worker.py:handle'

or, the same from this script (it calls herdsman_worker.serve itself, and finds the
package in this checkout's python/src when it is not installed):

    herdsman run -i people.csv -o out.jsonl --protocol framed \\
        -w 'python3 examples/workers/python/example_worker.py'

For each record {"name": ..., "age": ...}:
  - no name          -> filtered out (None: no output);
  - age "retry"      -> fails, retryably (as a flaky service would);
  - age not a number -> fails for good (int() raises ValueError);
  - tags "a;b;c"     -> one output per tag (a list explodes);
  - otherwise        -> one output with the name upper-cased and the age as a number.
"""
import os
import sys

try:
    import herdsman_worker
except ModuleNotFoundError:  # a checkout without `pip install ./python`: use its python/src
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.join(here, "..", "..", "..", "python", "src"))
    import herdsman_worker


def handle(record):
    if not record.get("name"):
        return None
    if record.get("age") == "retry":
        raise herdsman_worker.Retryable("the age service is busy", retry_after=1)
    age = int(record["age"])
    if record.get("tags"):
        return [{"name": record["name"], "tag": tag} for tag in record["tags"].split(";")]
    print(f"handled {record['name']}")  # logs are safe: print() goes to stderr
    return {"name": record["name"].upper(), "age": age}


if __name__ == "__main__":
    # `example_worker.py lines` serves herdsman's lines protocol: one output per record,
    # and a record that fails ends the worker (herdsman charges that record).
    herdsman_worker.serve(handle, protocol=sys.argv[1] if len(sys.argv) > 1 else None)

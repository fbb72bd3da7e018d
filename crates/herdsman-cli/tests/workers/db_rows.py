#!/usr/bin/env python3
"""Test worker for database output (framed protocol): answers record {id, value} with a row
of every column type. A value that is not an integer fails the record.

argv[1] = clean: every row fits the table made from the first one.
argv[1] = misfit: id % 10 == 3 adds an unknown key, id % 10 == 6 gives `half` as a string."""
import json
import sys

mode = sys.argv[1] if len(sys.argv) > 1 else "clean"
out = sys.stdout
for line in sys.stdin:
    msg = json.loads(line)
    rid, rec = msg["id"], msg["record"]
    try:
        value = int(rec["value"])
    except ValueError:
        out.write(json.dumps({"id": rid, "error": "value is not an integer", "retryable": False}) + "\n")
        out.flush()
        continue
    i = int(rec["id"])
    row = {
        "id": i,
        "value": value,
        "half": value / 2,
        "even": value % 2 == 0,
        "name": "row\t%d \"q\" \\ \u00e9\n" % i,
        "tags": {"i": i, "list": [1, "a", None]},
        "maybe": None if i % 3 == 0 else "m%d" % i,
    }
    if mode == "misfit" and i % 10 == 3:
        row["surprise"] = 1
    if mode == "misfit" and i % 10 == 6:
        row["half"] = "half"
    out.write(json.dumps({"id": rid, "output": row, "done": True}) + "\n")
    out.flush()

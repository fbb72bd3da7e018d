#!/usr/bin/env python3
"""Test worker answering records of several JSON shapes, by the record's `id`.

argv[1] = lines: id 1 -> 3, id 2 -> [1,2], id 3 -> "text", id 4 -> null, others -> the
record with an extra key `extra`.
argv[1] = framed: id 1 -> two outputs, an object then 3; others -> the record."""
import json
import sys

mode = sys.argv[1]
for line in sys.stdin:
    if mode == "lines":
        rec = json.loads(line)
        answer = {"1": 3, "2": [1, 2], "3": "text", "4": None}.get(str(rec["id"]))
        if answer is None and str(rec["id"]) != "4":
            answer = dict(rec, extra="x")
        print(json.dumps(answer))
    else:
        msg = json.loads(line)
        rid, rec = msg["id"], msg["record"]
        outputs = [rec, 3] if str(rec["id"]) == "1" else [rec]
        for o in outputs:
            print(json.dumps({"id": rid, "output": o}))
        print(json.dumps({"id": rid, "done": True}))
    sys.stdout.flush()

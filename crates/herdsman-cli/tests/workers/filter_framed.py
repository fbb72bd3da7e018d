#!/usr/bin/env python3
"""Framed-protocol test worker: drops records with an even id, emits odd ones twice, and
fails (not retryable) records whose value is not an integer."""
import json, sys
for line in sys.stdin:
    msg = json.loads(line)
    rid, rec = msg["id"], msg["record"]
    try:
        value = int(rec["value"])
    except ValueError:
        print(json.dumps({"id": rid, "error": f"value {rec['value']!r} is not an integer", "retryable": False}))
        sys.stdout.flush()
        continue
    if int(rec["id"]) % 2 == 1:
        for k in range(2):
            print(json.dumps({"id": rid, "output": {"id": rec["id"], "copy": k, "value": value}}))
    print(json.dumps({"id": rid, "done": True}))
    sys.stdout.flush()

#!/usr/bin/env python3
"""Test worker for static shards, speaking the framed protocol.

A record whose JSON text holds "bad" fails (not retryable), one that holds "skip" is
filtered (no output), any other one becomes {"in": record, "len": length of its JSON text}."""
import json
import sys

for line in sys.stdin:
    msg = json.loads(line)
    rid, rec = msg["id"], msg["record"]
    text = json.dumps(rec, separators=(",", ":"))
    if "bad" in text:
        answer = {"id": rid, "error": f"bad record: {text}", "retryable": False}
    elif "skip" in text:
        answer = {"id": rid, "done": True}
    else:
        answer = {"id": rid, "output": {"in": rec, "len": len(text)}, "done": True}
    sys.stdout.write(json.dumps(answer, separators=(",", ":")) + "\n")
    sys.stdout.flush()

#!/usr/bin/env python3
"""Test worker for runs shared by many nodes, speaking the framed protocol.

Sleeps DIST_DELAY_MS milliseconds per record (an environment variable, so that nodes of one
job may differ in speed without differing in identity). A record whose JSON text holds
"bad" fails (not retryable), one that holds "skip" is filtered (no output), any other one
becomes {"in": record, "len": length of its JSON text}."""
import json
import os
import sys
import time

delay = float(os.environ.get("DIST_DELAY_MS", "0")) / 1000.0
for line in sys.stdin:
    msg = json.loads(line)
    rid, rec = msg["id"], msg["record"]
    text = json.dumps(rec, separators=(",", ":"))
    if delay:
        time.sleep(delay)
    if "bad" in text:
        answer = {"id": rid, "error": f"bad record: {text}", "retryable": False}
    elif "skip" in text:
        answer = {"id": rid, "done": True}
    else:
        answer = {"id": rid, "output": {"in": rec, "len": len(text)}, "done": True}
    sys.stdout.write(json.dumps(answer, separators=(",", ":")) + "\n")
    sys.stdout.flush()

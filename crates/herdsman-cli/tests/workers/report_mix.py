#!/usr/bin/env python3
"""Framed-protocol test worker with a bit of everything, for the report:

usage: report_mix.py STATE_DIR

Each record sleeps (id % 7) milliseconds, then:
  value not an integer     fails for good ({"error": "value is not an integer: ...",
                           "retryable": false})
  id % 10 == 3             fails once with a retryable error and "retry_after": 0.05
                           (the first arrival leaves STATE_DIR/<id>), then succeeds
  id == 25                 the worker exits once (STATE_DIR/crashed marks it done)
  id % 10 == 7             succeeds with no output (filtered)
  otherwise                echoes {"id", "value"}
"""
import json, os, sys, time

state = sys.argv[1]
for line in sys.stdin:
    msg = json.loads(line)
    rid, rec = msg["id"], msg["record"]
    rec_id = int(rec["id"])
    time.sleep((rec_id % 7) / 1000.0)
    value = str(rec["value"])
    try:
        int(value)
    except ValueError:
        reply = {"id": rid, "error": "value is not an integer: " + value, "retryable": False}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
        continue
    if rec_id == 25 and not os.path.exists(os.path.join(state, "crashed")):
        open(os.path.join(state, "crashed"), "w").close()
        sys.exit(3)
    marker = os.path.join(state, str(rec_id))
    if rec_id % 10 == 3 and not os.path.exists(marker):
        open(marker, "w").close()
        reply = {"id": rid, "error": "HTTP 429 Too Many Requests", "retryable": True,
                 "retry_after": 0.05}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
        continue
    if rec_id % 10 == 7:
        sys.stdout.write(json.dumps({"id": rid, "done": True}) + "\n")
    else:
        out = {"id": rec_id, "value": value}
        sys.stdout.write(json.dumps({"id": rid, "output": out, "done": True}) + "\n")
    sys.stdout.flush()

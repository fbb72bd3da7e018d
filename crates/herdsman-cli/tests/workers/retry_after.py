#!/usr/bin/env python3
"""Framed-protocol test worker that asks herdsman to wait before a retry.

usage: retry_after.py STATE_DIR MODE VALUE

Every arrival of a record is appended to STATE_DIR/arrivals as "<record id> <monotonic
time>"; the first arrival of a record also leaves STATE_DIR/<record id> with its time, so
a retry on another worker process knows how long it waited (time.monotonic is one clock for
the whole machine on Linux). MODE says which first attempts fail:
  each   every record: {"error", "retryable": true, "retry_after": VALUE}
  first  only the record with id 0, the same way
  fatal  every record: {"error", "retryable": false, "retry_after": VALUE}
VALUE is written into the reply as given (JSON text). Later attempts succeed and output
{"id": <id>, "waited": <seconds since the first attempt>}.
"""
import json, os, sys, time

state, mode, value = sys.argv[1], sys.argv[2], sys.argv[3]
for line in sys.stdin:
    msg = json.loads(line)
    rid, rec_id = msg["id"], str(msg["record"]["id"])
    now = time.monotonic()
    with open(os.path.join(state, "arrivals"), "a") as f:
        f.write(f"{rec_id} {now}\n")
    first_file = os.path.join(state, rec_id)
    if not os.path.exists(first_file):
        with open(first_file, "w") as f:
            f.write(repr(now))
        if mode == "each" or mode == "fatal" or (mode == "first" and rec_id == "0"):
            retryable = "false" if mode == "fatal" else "true"
            sys.stdout.write(
                f'{{"id":{rid},"error":"HTTP 429 Too Many Requests","retryable":{retryable},"retry_after":{value}}}\n'
            )
            sys.stdout.flush()
            continue
    with open(first_file) as f:
        waited = now - float(f.read())
    out = {"id": int(rec_id), "waited": waited}
    sys.stdout.write(json.dumps({"id": rid, "output": out, "done": True}) + "\n")
    sys.stdout.flush()

#!/usr/bin/env python3
"""Framed-protocol test worker: while the file named by argv[1] exists, records whose id
is a multiple of 5 fail (retryable: false); otherwise every record is echoed."""
import json, os, sys
marker = sys.argv[1]
for line in sys.stdin:
    msg = json.loads(line)
    rid, rec = msg["id"], msg["record"]
    if os.path.exists(marker) and int(rec["id"]) % 5 == 0:
        print(json.dumps({"id": rid, "error": "service unavailable", "retryable": False}))
    else:
        print(json.dumps({"id": rid, "output": rec}))
        print(json.dumps({"id": rid, "done": True}))
    sys.stdout.flush()

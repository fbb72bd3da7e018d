#!/usr/bin/env python3
"""Lines-protocol test worker: echoes each record after a pseudo-random delay derived
from its id, so that workers finish out of order; adds "worker_pid"-free fields only."""
import json, sys, time
for line in sys.stdin:
    rec = json.loads(line)
    time.sleep((int(rec["id"]) * 7919 % 13) / 2000.0)
    rec["seen"] = True
    sys.stdout.write(json.dumps(rec, separators=(",", ":")) + "\n")
    sys.stdout.flush()

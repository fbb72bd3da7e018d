#!/usr/bin/env python3
"""Lines-protocol test worker that echoes records, but holds every record whose id is at
least FROM until the file DIR/open exists, after writing DIR/reached (once per worker, with
its pid). The tests use it to act while a run is certainly in the middle of its input. It
exits if herdsman goes away while it waits, so a failed test leaves nothing behind."""
import json, os, sys, time
start, where = int(sys.argv[1]), sys.argv[2]
parent = os.getppid()
reached = False
for line in sys.stdin:
    rec = json.loads(line)
    if int(rec["id"]) >= start:
        if not reached:
            reached = True
            tmp = os.path.join(where, f"reached.{os.getpid()}.tmp")
            with open(tmp, "w") as f:
                f.write(str(os.getpid()))
            os.replace(tmp, os.path.join(where, "reached"))
        while not os.path.exists(os.path.join(where, "open")):
            if os.getppid() != parent:
                sys.exit("gate.py: herdsman went away")
            time.sleep(0.01)
    sys.stdout.write(json.dumps(rec, separators=(",", ":")) + "\n")
    sys.stdout.flush()

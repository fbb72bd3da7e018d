#!/usr/bin/env python3
"""Lines-protocol test worker: on the record whose id is argv[1] it starts a grandchild
(`sleep 300`), writes the grandchild's pid to argv[2], and hangs; echoes other records."""
import json, subprocess, sys, time
bad, pidfile = sys.argv[1], sys.argv[2]
for line in sys.stdin:
    rec = json.loads(line)
    if str(rec.get("id")) == bad:
        child = subprocess.Popen(["sleep", "300"])
        with open(pidfile, "w") as f:
            f.write(str(child.pid))
        time.sleep(300)
    sys.stdout.write(line)
    sys.stdout.flush()

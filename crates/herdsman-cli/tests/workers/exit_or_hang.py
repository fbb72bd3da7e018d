#!/usr/bin/env python3
"""Lines-protocol test worker: exits with status 3 (after one stderr line) on records whose
id is in the comma-separated list argv[1], hangs without a word on those in argv[2], and
echoes every other record."""
import json, sys, time
crash = set(sys.argv[1].split(","))
hang = set(sys.argv[2].split(",")) if len(sys.argv) > 2 else set()
for line in sys.stdin:
    rid = str(json.loads(line).get("id"))
    if rid in crash:
        sys.stderr.write(f"giving up on record {rid}\n")
        sys.stderr.flush()
        sys.exit(3)
    if rid in hang:
        time.sleep(3600)
    sys.stdout.write(line)
    sys.stdout.flush()

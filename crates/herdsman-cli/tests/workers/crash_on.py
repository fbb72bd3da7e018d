#!/usr/bin/env python3
"""Lines-protocol test worker: exits with status 3 when it receives the record whose id
is argv[1]; echoes every other record."""
import sys
bad = sys.argv[1]
import json
for line in sys.stdin:
    rec = json.loads(line)
    if str(rec.get("id")) == bad:
        sys.stderr.write(f"about to crash on {bad}\n")
        sys.stderr.flush()
        sys.exit(3)
    sys.stdout.write(line)
    sys.stdout.flush()

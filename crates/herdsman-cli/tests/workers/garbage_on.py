#!/usr/bin/env python3
"""Lines-protocol test worker: answers the record whose id is argv[1] with a line that is
not JSON; echoes every other record."""
import json, sys
bad = sys.argv[1]
for line in sys.stdin:
    rec = json.loads(line)
    if str(rec.get("id")) == bad:
        sys.stdout.write("this is not json\n")
    else:
        sys.stdout.write(line)
    sys.stdout.flush()

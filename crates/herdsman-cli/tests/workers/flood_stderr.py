#!/usr/bin/env python3
"""Lines-protocol test worker: writes about 64 KiB to stderr for every record (megabytes
over a run) and echoes the record."""
import sys
junk = ("x" * 1023 + "\n") * 64
for line in sys.stdin:
    sys.stderr.write(junk)
    sys.stdout.write(line)
    sys.stdout.flush()

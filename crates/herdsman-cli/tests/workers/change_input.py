#!/usr/bin/env python3
"""Lines-protocol test worker: on the first record it receives, changes the file argv[2]
(argv[1] = append: adds a line; truncate: cuts it to 10 bytes), then echoes every record."""
import os
import sys

mode, path = sys.argv[1], sys.argv[2]
first = True
for line in sys.stdin:
    if first:
        first = False
        if mode == "append":
            with open(path, "a") as f:
                f.write("appended while read\n")
        else:
            os.truncate(path, 10)
    sys.stdout.write(line)
    sys.stdout.flush()

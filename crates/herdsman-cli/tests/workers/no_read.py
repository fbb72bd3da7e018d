#!/usr/bin/env python3
"""Test worker that never reads its stdin and never answers."""
import time
time.sleep(300)

#!/usr/bin/env python3
"""bigout: prints 20 MiB to stdout (twice the 10 MiB cap) and exits 0."""

import sys

sys.stdin.read()
chunk = b"x" * (1024 * 1024)
for _ in range(20):
    sys.stdout.buffer.write(chunk)
sys.stdout.flush()

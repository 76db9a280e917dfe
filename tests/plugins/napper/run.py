#!/usr/bin/env python3
"""napper: records that it started (appends a line to payload.marker), sleeps payload.seconds, succeeds."""

import json
import os
import sys
import time

request = json.load(sys.stdin)
payload = request.get("payload") or {}
marker = payload.get("marker")
if marker:
    with open(marker, "a") as f:
        f.write(f"{request['job_id']} {os.getpid()}\n")
time.sleep(float(payload.get("seconds", 1)))
json.dump({"status": "ok", "result": {"slept": payload.get("seconds", 1)}}, sys.stdout)

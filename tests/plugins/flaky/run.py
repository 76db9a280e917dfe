#!/usr/bin/env python3
"""flaky: counts its calls in payload.counter_file; fails (exit 1, exit 78, retry:false or sleep)
until the call number reaches payload.succeed_on (0 = never succeeds)."""

import json
import sys
import time

request = json.load(sys.stdin)
payload = request.get("payload") or {}
path = payload.get("counter_file")
calls = 1
if path:
    try:
        with open(path) as f:
            calls = int(f.read().strip() or 0) + 1
    except FileNotFoundError:
        calls = 1
    with open(path, "w") as f:
        f.write(str(calls))
succeed_on = int(payload.get("succeed_on", 0))
if succeed_on and calls >= succeed_on:
    json.dump({"status": "ok", "result": {"calls": calls}}, sys.stdout)
    sys.exit(0)
mode = payload.get("mode", "exit1")
if mode == "exit78":
    print("permanently broken", file=sys.stderr)
    sys.exit(78)
if mode == "no_retry":
    json.dump({"status": "error", "error": f"refused on call {calls}", "retry": False}, sys.stdout)
    sys.exit(0)
if mode == "sleep":
    time.sleep(60)
print(f"flaky failure on call {calls}", file=sys.stderr)
sys.exit(1)

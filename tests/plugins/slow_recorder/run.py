#!/usr/bin/env python3
"""slow_recorder: appends "start <ns> <pid>" and "end <ns> <pid>" (CLOCK_MONOTONIC, shared by
every process on the host) to the file named by payload.record_file or config.record_file,
sleeping payload.seconds (default 0.5) in between."""

import json
import os
import sys
import time


def record(path: str, what: str) -> None:
    with open(path, "a") as f:  # one short O_APPEND write per line: lines never interleave
        f.write(f"{what} {time.monotonic_ns()} {os.getpid()}\n")


def main() -> None:
    request = json.load(sys.stdin)
    payload = request.get("payload") or {}
    path = payload.get("record_file") or (request.get("config") or {})["record_file"]
    record(path, "start")
    time.sleep(float(payload.get("seconds", 0.5)))
    record(path, "end")
    json.dump({"status": "ok", "result": {"pid": os.getpid(), "n": payload.get("n")}}, sys.stdout)


if __name__ == "__main__":
    main()

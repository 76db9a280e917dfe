#!/usr/bin/env python3
"""ids: reports who it runs as (uid, gid, groups), its cwd and HOME/USER, and whether it may open payload.probe."""

import json
import os
import sys
import time

request = json.load(sys.stdin)
payload = request.get("payload") or {}
probe = payload.get("probe")
opened = None
if probe:
    try:
        with open(probe, "rb"):
            opened = True
    except OSError as exc:
        opened = exc.strerror
if payload.get("marker"):
    with open(payload["marker"], "a") as f:
        f.write(f"{request['job_id']} {os.getpid()}\n")
time.sleep(float(payload.get("seconds", 0)))
json.dump(
    {
        "status": "ok",
        "result": {
            "uid": os.getuid(),
            "euid": os.geteuid(),
            "gid": os.getgid(),
            "groups": os.getgroups(),
            "cwd": os.getcwd(),
            "home": os.environ.get("HOME"),
            "user": os.environ.get("USER"),
            "opened": opened,
        },
    },
    sys.stdout,
)

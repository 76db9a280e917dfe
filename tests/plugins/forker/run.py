#!/usr/bin/env python3
"""forker: leaves two grandchildren holding stdout open — one in the plugin's process
group, one that called setsid — writes their pids to payload.pid_file, answers and exits."""

import json
import os
import sys
import time


def spawn(new_session: bool) -> int:
    pid = os.fork()
    if pid == 0:
        if new_session:
            os.setsid()
        time.sleep(30)  # stdout and stderr stay open in here
        os._exit(0)
    return pid


def main() -> None:
    request = json.load(sys.stdin)
    payload = request.get("payload") or {}
    in_group = spawn(new_session=False)
    escaped = spawn(new_session=True)
    if payload.get("pid_file"):
        with open(payload["pid_file"] + ".tmp", "w") as f:
            f.write(f"{os.getpid()} {in_group} {escaped}\n")
        os.replace(payload["pid_file"] + ".tmp", payload["pid_file"])
    json.dump({"status": "ok", "result": {"children": [in_group, escaped]}}, sys.stdout)
    sys.stdout.flush()


if __name__ == "__main__":
    main()

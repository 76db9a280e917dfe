#!/usr/bin/env python3
"""mimic: a protocol-2 plugin whose reply the test controls (see manifest.yaml)."""

import json
import sys


def main() -> None:
    request = json.load(sys.stdin)
    command, payload = request["command"], request.get("payload") or {}
    seen = {"state": request.get("state"), "event": request.get("event")}
    if command == "reply":
        response = payload["reply"]
    elif command in ("snapshot", "merge"):
        response = {"status": "ok", "result": {"seen": seen}, "state_updates": payload.get("snapshot") or {}}
    elif command == "emit":
        response = {"status": "ok", "result": "emitted", "events": payload.get("events") or []}
    else:
        response = {"status": "ok", "result": {"seen": seen}}
    json.dump(response, sys.stdout)


if __name__ == "__main__":
    main()

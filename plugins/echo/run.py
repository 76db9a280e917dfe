#!/usr/bin/env python3
"""echo: a Ductile protocol-2 plugin. One JSON request on stdin, one JSON response on stdout."""

import json
import sys


def main() -> None:
    request = json.load(sys.stdin)
    command = request.get("command")
    payload = request.get("payload") or {}
    state = request.get("state") or {}
    count = int(state.get("count", 0)) + 1
    if command == "health":
        response = {"status": "ok", "result": {"healthy": True}, "logs": []}
    elif command == "handle":
        event = request.get("event") or {}
        data = event.get("payload") or payload
        message = f"Handled {event.get('type', 'event')}"
        response = {
            "status": "ok",
            "result": {"echo": data},
            "events": [{"type": "echo.handled", "payload": data}],
            "state_updates": {"count": count},
            "logs": [{"level": "info", "message": message}],
        }
    else:
        message = "Echoed: " + str(payload.get("message", (request.get("config") or {}).get("message", "")))
        response = {
            "status": "ok",
            "result": message,
            "events": [],
            "state_updates": {},
            "logs": [{"level": "info", "message": message}],
        }
    json.dump(response, sys.stdout)


if __name__ == "__main__":
    main()

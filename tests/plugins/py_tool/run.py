#!/usr/bin/env python3
"""py_tool: a Python protocol-2 plugin with several commands."""

import json
import os
import sys


def main() -> None:
    request = json.load(sys.stdin)
    command = request["command"]
    payload = request.get("payload") or {}
    if command == "add":
        response = {"status": "ok", "result": {"sum": payload["a"] + payload["b"]}}
    elif command == "upper":
        response = {"status": "ok", "result": {"text": str(payload.get("text", "")).upper()}}
    elif command == "env":
        response = {"status": "ok", "result": {"env": sorted(os.environ)}}
    elif command in ("whoami", "handle"):
        shown = {k: v for k, v in request.items() if k != "secrets"}
        shown["secret_keys"] = sorted(request.get("secrets") or {})
        response = {"status": "ok", "result": shown}
    elif command == "fail":
        response = {"status": "error", "error": "py_tool was asked to fail", "retry": False}
    else:
        response = {"status": "error", "error": f"unknown command {command}"}
    json.dump(response, sys.stdout)


if __name__ == "__main__":
    main()

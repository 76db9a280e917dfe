"""typed: an in-process plugin that answers every command with what it was given (tests/fuzz)."""

from typing import Any


async def run(request: dict[str, Any]) -> dict[str, Any]:
    return {
        "status": "ok",
        "result": {"command": request.get("command"), "payload": request.get("payload") or {}},
        "logs": [],
    }

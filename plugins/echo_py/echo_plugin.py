"""echo_py: the echo plugin as an in-process `protocol: python` plugin (request dict → response dict)."""

from typing import Any


async def run(request: dict[str, Any]) -> dict[str, Any]:
    command = request.get("command")
    payload = request.get("payload") or {}
    if command == "health":
        return {"status": "ok", "result": {"healthy": True}, "logs": []}
    if command == "handle":
        event = request.get("event") or {}
        data = event.get("payload") or payload
        return {
            "status": "ok",
            "result": {"echo": data},
            "events": [{"type": "echo.handled", "payload": data}],
            "logs": [{"level": "info", "message": f"Handled {event.get('type', 'event')}"}],
        }
    message = "Echoed: " + str(payload.get("message", (request.get("config") or {}).get("message", "")))
    return {
        "status": "ok",
        "result": message,
        "events": [],
        "state_updates": {},
        "logs": [{"level": "info", "message": message}],
    }

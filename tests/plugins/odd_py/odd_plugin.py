"""odd_py: answers with what payload.kind names — values JSON or the wire encoder cannot carry."""

from typing import Any


def _deep(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = {"d": value}
    return value


def run(request: dict[str, Any]) -> dict[str, Any]:
    payload = request.get("payload") or {}
    kind = payload.get("kind")
    if kind == "raise_surrogate":
        raise ValueError("broken \ud800 text")
    results: dict[str, Any] = {
        "surrogate": "lone \ud800 surrogate",
        "surrogate_key": {"\udc00": 1},
        "deep": _deep(300),
        "bigint": 2**70,
        "nan": float("nan"),
        "int_key": {1: "one"},
        "set": {1, 2},
        "nul": "a\u0000b",
        # ~650 kB of distinct words: a tsvector of all of it would pass Postgres' 1 MiB limit
        "wordy": " ".join(f"{i:x}" for i in range(120_000)),
    }
    response: dict[str, Any] = {"status": "ok", "result": results.get(kind, "plain"), "logs": []}
    if kind == "emit_deep":
        response["events"] = [{"type": "odd.deep", "payload": _deep(300)}]
    if kind == "log_surrogate":
        response["logs"] = [{"level": "info", "message": "lone \udfff"}]
    return response

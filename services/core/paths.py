"""Dotted paths over the documents a pipeline sees: `payload.x.y`, `context.a`, `config.k`."""

from __future__ import annotations

from typing import Any

ROOTS = ("payload", "context", "config")
MISSING = object()


def check(path: object) -> str | None:
    """Why `path` is not a valid reference, or None."""
    if not isinstance(path, str) or not path:
        return "a path must be a non-empty string"
    root, _, rest = path.partition(".")
    if root not in ROOTS:
        return f"path {path!r} must start with payload., context. or config."
    if rest and any(not part for part in rest.split(".")):
        return f"path {path!r} has an empty segment"
    return None


def lookup(scope: dict[str, Any], path: str) -> Any:
    """The value at `path` in `scope` ({"payload": …, "context": …, "config": …}), or MISSING."""
    current: Any = scope
    for part in path.split("."):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return MISSING
    return current


def assign(target: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `dotted` (e.g. "web.url") inside `target`, creating objects on the way."""
    parts = dotted.split(".")
    current = target
    for part in parts[:-1]:
        nxt = current.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            current[part] = nxt
        current = nxt
    current[parts[-1]] = value

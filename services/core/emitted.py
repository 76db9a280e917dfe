"""What core adds to each event a plugin emits, as Ductile's core does when the plugin leaves them
empty: `source` (the emitting plugin), `timestamp` (when the attempt's outcome was recorded) and
`event_id` (a UUID derived from job, attempt and index, so every process and every redelivery
names the same event alike). The stored result keeps the plugin's reply as it was (Ductile stores
raw stdout); the runner's `plugin.emitted` record and the dispatcher's routed events carry these.
"""

from __future__ import annotations

import uuid
from typing import Any

NAMESPACE = uuid.UUID("2f1b6c0e-7d4a-4f8e-9a51-6c3e0b9d2a47")
STAMP = ("source", "timestamp", "event_id")


def event_id(job_id: str, attempt: int, index: int) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{job_id}:{attempt}:{index}"))


def stamped(event: dict[str, Any], *, plugin: str, job_id: str, attempt: int, index: int, at: str) -> dict[str, Any]:
    """`event` with `source`, `timestamp` and `event_id` filled where empty (what a plugin set is kept)."""
    return {
        **event,
        "source": event.get("source") or plugin,
        "timestamp": event.get("timestamp") or at,
        "event_id": event.get("event_id") or event_id(job_id, attempt, index),
    }

"""Trace events of agent runs and prompts: the agent loop calls `Tracer.emit(kind, payload)` and
an `evt.trace.<job_id>.<kind>` event is stored (type `trace.<kind>`, data `{agent_name, attempt,
payload}`); the projector turns them into rows of the `traces` table.

Ids are `<job_id>:<attempt>:trace:<n>`, so a re-publish of the same trace is dropped by JetStream.
Payloads hold previews (`preview`), never whole results: a trace must stay far below NATS's max payload.
"""

from __future__ import annotations

from typing import Any

import orjson

from services.core import bus as bus_mod
from services.core import envelope, subjects
from services.runner import attempt

#: Laddr's trace types
TYPES = frozenset({"task_start", "llm_usage", "tool_call", "tool_result", "tool_error", "cache_hit", "delegation",
                   "task_complete", "task_error", "task_cancelled"})
PREVIEW_BYTES = 4096


def preview(value: Any, limit: int = PREVIEW_BYTES) -> Any:
    """`value` when its JSON is small, else its JSON text cut to `limit` bytes and marked."""
    raw = orjson.dumps(value, default=str)
    if len(raw) <= limit:
        return value
    return raw[:limit].decode("utf-8", "ignore") + "…[truncated]"


def now() -> str:
    return envelope.rfc3339(envelope.now())


class Tracer:
    """The trace stream of one attempt of one agent run or prompt."""

    def __init__(self, bus: bus_mod.Bus, item: attempt.WorkItem, *, agent_name: str, source: str) -> None:
        self.bus = bus
        self.item = item
        self.agent_name = agent_name
        self.source = source
        self.count = 0

    async def emit(self, kind: str, payload: dict[str, Any]) -> None:
        assert kind in TYPES, kind
        self.count += 1
        item = self.item
        env = envelope.make(
            f"trace.{kind}", source=self.source, job_id=item.job_id,
            id=f"{item.job_id}:{item.attempt}:trace:{self.count}",
            causation_id=item.job_id, correlation_id=item.correlation_id,
            data={"agent_name": self.agent_name, "attempt": item.attempt, "payload": payload},
        )
        await self.bus.publish(subjects.trace_event(item.job_id, kind), env)

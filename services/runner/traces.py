"""Trace events of agent runs and prompts: the agent loop calls `Tracer.emit(kind, payload)` and
an `evt.trace.<job_id>.<kind>` event is stored (type `trace.<kind>`, data `{agent_name, attempt,
payload, parent}`); the projector turns them into rows of the `traces` table.

Ids are `<job_id>:<attempt>:trace:<n>`, so a re-publish of the same trace is dropped by JetStream.
Payloads hold previews (`preview`), never whole results: a trace must stay far below NATS's max payload.

Parents (the `parent_id` of Laddr's trace rows): `parent` names the envelope id of the parent trace
event, never a stream sequence, so the projector resolves it to that event's row id on every
projection (live or `headrace rebuild`, even of a re-sequenced log). A run's `task_start` names the
trace of the parent job that started the run (`context.parent_trace` of its work item: a prompt's
`delegation`), or nothing for a root run; every other trace of the run names the run's `task_start`.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from services.core import bus as bus_mod
from services.core import envelope, subjects
from services.runner import attempt

#: Laddr's trace types
TYPES = frozenset(
    {
        "task_start",
        "llm_usage",
        "autonomous_think",
        "tool_call",
        "tool_result",
        "tool_error",
        "cache_hit",
        "delegation",
        "task_complete",
        "task_error",
        "task_cancelled",
    }
)
PREVIEW_BYTES = 4096
#: Laddr's `result_preview`: the first 500 characters of the result's text
RESULT_PREVIEW_CHARS = 500
#: the key of a work item's context naming the trace (envelope id) that started the run
PARENT_TRACE = "parent_trace"
#: context keys of a batch task (set by whoever submits it) → Laddr's keys in `task_start.inputs`;
#: a `trace_id` in the context is also added to every payload of the run, as Laddr does
BATCH_INPUTS = {"trace_id": "trace_id", "batch_id": "_batch_id", "batch_index": "_batch_index"}


def task_inputs(item: attempt.WorkItem) -> dict[str, Any]:
    """Laddr's `task_start.inputs`: the whole task, i.e. the inputs plus `job_id` (and a batch task's keys)."""
    context = item.context or {}
    extra = {laddr: context[key] for key, laddr in BATCH_INPUTS.items() if context.get(key) is not None}
    return {**item.payload, "job_id": item.job_id, **extra}


def preview(value: Any, limit: int = PREVIEW_BYTES) -> Any:
    """`value` when its JSON is small, else its JSON text cut to `limit` bytes and marked."""
    raw = orjson.dumps(value, default=str)
    if len(raw) <= limit:
        return value
    return raw[:limit].decode("utf-8", "ignore") + "…[truncated]"


def result_preview(value: Any) -> str | None:
    """Laddr's `result_preview`: text as it is, anything else as JSON, cut to 500 characters; None for None."""
    if value is None:
        return None
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    return text[:RESULT_PREVIEW_CHARS]


def now() -> str:
    return envelope.rfc3339(envelope.now())


class Span:
    """Laddr's timing keys of one step: `started_at` when made, `ended_at` and `duration_ms` at `end()`."""

    def __init__(self) -> None:
        self.started_at = now()
        self._t0 = time.monotonic()

    def end(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at,
            "ended_at": now(),
            "duration_ms": int((time.monotonic() - self._t0) * 1000),
        }


class Tracer:
    """The trace stream of one attempt of one agent run or prompt."""

    def __init__(self, bus: bus_mod.Bus, item: attempt.WorkItem, *, agent_name: str, source: str) -> None:
        self.bus = bus
        self.item = item
        self.agent_name = agent_name
        self.source = source
        self.count = 0
        #: the envelope id of this attempt's `task_start` (the parent of its other traces) once emitted
        self.root: str | None = None

    def id_of(self, n: int) -> str:
        return f"{self.item.job_id}:{self.item.attempt}:trace:{n}"

    def parent_of(self, kind: str) -> str | None:
        if kind == "task_start":
            parent = (self.item.context or {}).get(PARENT_TRACE)
            return parent if isinstance(parent, str) and parent else None
        return self.root

    async def emit(self, kind: str, payload: dict[str, Any]) -> str:
        """Publish one trace; returns its envelope id (what a child's `parent` names)."""
        assert kind in TYPES, kind
        self.count += 1  # taken before the await: concurrent tool calls get distinct ids
        item = self.item
        event_id = self.id_of(self.count)
        trace_id = (item.context or {}).get("trace_id")
        if trace_id is not None and "trace_id" not in payload:
            payload = {**payload, "trace_id": trace_id}
        data: dict[str, Any] = {"agent_name": self.agent_name, "attempt": item.attempt, "payload": payload}
        parent = self.parent_of(kind)
        if parent is not None:
            data["parent"] = parent
        if kind == "task_start" and self.root is None:
            self.root = event_id
        env = envelope.make(
            f"trace.{kind}",
            source=self.source,
            job_id=item.job_id,
            id=event_id,
            causation_id=item.job_id,
            correlation_id=item.correlation_id,
            data=data,
        )
        await self.bus.publish(subjects.trace_event(item.job_id, kind), env)
        return event_id

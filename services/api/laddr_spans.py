"""Laddr's trace rows and spans built from trace events of the event log (the WebSockets of
services/api/laddr_ws.py read the log itself, not the `traces` table).

A trace event (`evt.trace.<job_id>.<type>`, type `trace.<type>`) becomes the row GET /api/traces
shows (`laddr_traces.trace_view`: the id is the event's stream sequence, as the projector's row id)
with its `parent_id`: the runner names the parent trace by its envelope id (`data.parent`), which
`Traces` resolves to that event's sequence when it has seen it (a `data.parent_id` integer is taken
as it is). A row whose parent is unknown has `parent_id: null` and is a root.

Spans are Laddr's (`/ws/prompts` of 0.9.6, `build_span`): `{id, name, type, start_time, agent,
event_type, input, output, metadata:{duration_ms, tokens, cost, **payload}, children}` — with real
children (nested by `parent_id`), plus `job_id` and `parent_id` so a client can attach a span sent
in a later increment to a parent it already has. `duration_ms` of a `task_complete`/`task_error` is
measured from the `task_start` of the same job (Laddr takes the first one of the same agent name).
"""

from __future__ import annotations

from typing import Any

from services.api import laddr_traces
from services.core import envelope

PREFIX = "trace."
Row = dict[str, Any]


def span_type(event_type: str) -> str:
    """Laddr's `_get_span_type`."""
    if event_type.startswith("task_"):
        return "agent"
    if event_type in ("tool_call", "tool_result"):
        return "tool"
    if event_type in ("llm_call", "llm_usage"):
        return "llm"
    if "think" in event_type:
        return "reasoning"
    return "event"


def _tokens(event_type: str, payload: dict[str, Any]) -> tuple[Any, Any]:
    if event_type != "llm_usage" and "usage" not in payload:
        return None, None
    usage = payload.get("usage", payload)
    if not isinstance(usage, dict):
        return None, None
    total = usage.get("total_tokens")
    if total is None:
        parts = [usage.get(k) for k in ("prompt_tokens", "completion_tokens")]
        total = sum(p for p in parts if isinstance(p, int))
    return total, usage.get("cost")


def _ms_between(start: str | None, end: str | None) -> int | None:
    if not start or not end:
        return None
    try:
        return int((envelope.parse_time(end) - envelope.parse_time(start)).total_seconds() * 1000)
    except ValueError:
        return None


class Traces:
    """The trace events one socket has seen: rows by id, parents resolved, task starts per job."""

    def __init__(self) -> None:
        self.by_id: dict[int, Row] = {}
        self._seq_of: dict[str, int] = {}
        self._start_of: dict[str, str] = {}

    def add(self, seq: int, env: envelope.Envelope, *, remember: bool = True) -> Row | None:
        """The row of a trace event (None for any other event); with `remember`, kept for later
        parents, durations and `tree` (a socket that only forwards rows passes False: bounded memory)."""
        if not env.type.startswith(PREFIX) or env.job_id is None:
            return None
        data = env.data
        payload = data.get("payload")
        agent = data.get("agent_name")
        parent = data.get("parent")
        parent_id = self._seq_of.get(parent) if isinstance(parent, str) else None
        if parent_id is None and isinstance(data.get("parent_id"), int):
            parent_id = data["parent_id"]
        row = {
            "id": seq,
            "job_id": env.job_id,
            "agent_name": str(agent) if agent is not None else None,
            "event_type": env.type.removeprefix(PREFIX),
            "payload": payload if isinstance(payload, dict) else {"value": payload},
            "timestamp": envelope.parse_time(env.time),
            "parent_id": parent_id,
        }
        view = laddr_traces.trace_view(row)
        view["parent_id"] = parent_id
        if not remember:
            return view
        self._seq_of[env.id] = seq
        if view["event_type"] == "task_start":
            self._start_of[env.job_id] = view["timestamp"]
        self.by_id[seq] = view
        return view

    def span(self, row: Row) -> dict[str, Any]:
        event_type = row["event_type"] or ""
        payload = row["payload"] or {}
        agent = row["agent_name"] or ""
        duration_ms = None
        if event_type in ("task_complete", "task_error"):
            duration_ms = _ms_between(self._start_of.get(row["job_id"]), row["timestamp"])
        tokens, cost = _tokens(event_type, payload)
        return {
            "id": row["id"],
            "name": agent if event_type.startswith("task_") else payload.get("tool", event_type),
            "type": span_type(event_type),
            "start_time": row["timestamp"],
            "agent": agent,
            "event_type": event_type,
            "input": payload.get("inputs", payload.get("params", {})),
            "output": payload.get("result", payload.get("outputs")),
            "metadata": {"duration_ms": duration_ms, "tokens": tokens, "cost": cost, **payload},
            "children": [],
            "job_id": row["job_id"],
            "parent_id": row["parent_id"],
        }

    def tree(self, rows: list[Row]) -> list[dict[str, Any]]:
        """The spans of `rows` (oldest first), each under its parent when the parent is among them."""
        spans = {row["id"]: self.span(row) for row in rows}
        roots = []
        for row in sorted(rows, key=lambda r: r["id"]):
            parent = row["parent_id"]
            if parent is not None and parent in spans and parent < row["id"]:
                spans[parent]["children"].append(spans[row["id"]])
            else:
                roots.append(spans[row["id"]])
        return roots


def event_summary(row: Row) -> dict[str, Any]:
    """One `/ws/events` message: Laddr's four keys of a trace."""
    return {
        "type": "trace",
        "data": {
            "job_id": row["job_id"],
            "agent_name": row["agent_name"],
            "event_type": row["event_type"],
            "timestamp": row["timestamp"],
        },
    }

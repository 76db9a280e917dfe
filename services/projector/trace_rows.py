"""Trace events into `traces` rows: `projection.apply_batch` calls `trace_rows(batch, lookup)` for
every batch; an `evt.trace.<job_id>.<type>` event (type `trace.<type>`) gives one row whose id is
the stream sequence, anything else none.

`parent_id`: a trace event names its parent by the parent's envelope id (`data.parent`, see
services/runner/traces.py); it becomes the id of the first row with that `event_id` that comes
before it in the log: an earlier row of the same batch, else one already projected (`lookup`, the
projector's query over `traces.event_id`). A parent that is not in the log gives NULL. Only what
precedes an event counts, so the result does not depend on where batches begin and rebuild gives
the same rows.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from services.core import envelope

TRACE_COLUMNS = ("id", "job_id", "agent_name", "event_type", "payload", "timestamp", "parent_id", "event_id")
PREFIX = "trace."

Row = tuple[int, str, str | None, str, dict[str, Any], datetime, int | None, str]
#: event ids → the id of their first row, for ids already projected
Lookup = Callable[[Collection[str]], Awaitable[Mapping[str, int]]]


def is_trace(env: envelope.Envelope) -> bool:
    return env.type.startswith(PREFIX) and env.job_id is not None


def parent_ref(env: envelope.Envelope) -> str | None:
    parent = env.data.get("parent")
    return parent if isinstance(parent, str) and parent else None


def trace_row(seq: int, env: envelope.Envelope, parent_id: int | None = None) -> Row | None:
    if not is_trace(env):
        return None
    assert env.job_id is not None
    data = env.data
    payload = data.get("payload")
    agent = data.get("agent_name")
    return (
        seq,
        env.job_id,
        str(agent) if agent is not None else None,
        env.type.removeprefix(PREFIX),
        payload if isinstance(payload, dict) else {"value": payload},
        envelope.parse_time(env.time),
        parent_id,
        env.id,
    )


async def trace_rows(batch: Sequence[tuple[int, envelope.Envelope]], lookup: Lookup) -> list[Row]:
    """The rows of the batch's trace events (ordered by seq), parents resolved."""
    traced = [(seq, env) for seq, env in batch if is_trace(env)]
    if not traced:
        return []
    own: dict[str, int] = {}
    for seq, env in traced:
        own.setdefault(env.id, seq)
    wanted = {ref for _, env in traced if (ref := parent_ref(env)) is not None}
    # a parent projected before this batch wins over one in it: it comes first in the log
    earlier = dict(await lookup(sorted(wanted))) if wanted else {}
    rows: list[Row] = []
    for seq, env in traced:
        ref = parent_ref(env)
        parent_id = None
        if ref is not None:
            parent_id = earlier.get(ref)
            if parent_id is None and own.get(ref, seq) < seq:
                parent_id = own[ref]
        row = trace_row(seq, env, parent_id)
        assert row is not None
        rows.append(row)
    return rows

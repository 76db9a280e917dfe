"""Trace events into `traces` rows: `projection.apply_batch` calls `trace_row(seq, env)` for every
event of a batch; an `evt.trace.<job_id>.<type>` event (type `trace.<type>`) gives one row whose
id is the stream sequence, anything else gives None. Pure, so rebuild produces the same rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.core import envelope

TRACE_COLUMNS = ("id", "job_id", "agent_name", "event_type", "payload", "timestamp")
PREFIX = "trace."


def trace_row(seq: int, env: envelope.Envelope) -> tuple[int, str, str | None, str, dict[str, Any], datetime] | None:
    if not env.type.startswith(PREFIX) or env.job_id is None:
        return None
    data = env.data
    payload = data.get("payload")
    agent = data.get("agent_name")
    return (seq, env.job_id, str(agent) if agent is not None else None, env.type.removeprefix(PREFIX),
            payload if isinstance(payload, dict) else {"value": payload}, envelope.parse_time(env.time))

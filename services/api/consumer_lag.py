"""How far behind its stream each consumer is, for GET /system/selfcheck's `consumers` key:

    [{"name": "projector", "stream": "EVENTS", "pending": n, "checkpoint": s, "last_seq": m},
     {"name": "dispatcher-commands", "stream": "COMMANDS", "pending": n, "ack_pending": n, "redelivered": n}, ...]

`pending`: messages not delivered yet (for the projector: events after its checkpoint in Postgres);
`ack_pending`: delivered, not acknowledged yet (in flight). Every durable consumer of the four
streams is listed (the dispatcher's, each plugin's and agent's runner consumer); the ordered ones a
live stream or the projector's reader opens for itself are not (they have no durable name).
"""

from __future__ import annotations

from typing import Any

import nats.js.errors

from services.api import state
from services.core import subjects

STREAMS = (subjects.COMMANDS, subjects.INGEST, subjects.WORK, subjects.EVENTS)
CHECKPOINT_SQL = "SELECT stream_seq FROM checkpoint WHERE name = 'events'"


async def durable_consumers(st: state.ApiState) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for stream in STREAMS:
        try:
            infos = await st.bus.js.consumers_info(stream)
        except nats.js.errors.NotFoundError:  # no such stream yet (nothing has used it)
            continue
        for info in sorted(infos, key=lambda i: i.name or ""):
            if not info.config.durable_name:
                continue
            out.append(
                {
                    "name": info.name,
                    "stream": stream,
                    "pending": int(info.num_pending or 0),
                    "ack_pending": int(info.num_ack_pending or 0),
                    "redelivered": int(info.num_redelivered or 0),
                }
            )
    return out


async def projector(st: state.ApiState) -> dict[str, Any]:
    last = await st.bus.stream_last_seq(subjects.EVENTS)
    checkpoint = int(await st.pool.fetchval(CHECKPOINT_SQL) or 0)
    return {
        "name": "projector",
        "stream": subjects.EVENTS,
        "pending": max(0, last - checkpoint),
        "checkpoint": checkpoint,
        "last_seq": last,
    }


async def consumers(st: state.ApiState) -> list[dict[str, Any]]:
    """The projector first, then every durable consumer by stream and name."""
    return [await projector(st), *await durable_consumers(st)]

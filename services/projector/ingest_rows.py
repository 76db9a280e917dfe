"""Rejected ingest events into `ingest_rejections` rows (GET /events/rejected): `projection.apply_batch`
calls `rejection_row(seq, env)` for every event of a batch; an `ingest.rejected` event gives one
row whose id is its stream sequence, anything else gives None. Pure, so rebuild produces the same rows.
"""

from __future__ import annotations

from datetime import datetime

from services.core import envelope

EVENT_TYPE = "ingest.rejected"
COLUMNS = (
    "id",
    "event_id",
    "subject",
    "ingest_seq",
    "claimed_type",
    "reason",
    "raw",
    "raw_bytes",
    "truncated",
    "rejected_at",
)
INSERT_SQL = f"""
INSERT INTO ingest_rejections ({", ".join(COLUMNS)})
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (id) DO NOTHING
"""

Row = tuple[int, str, str, int | None, str | None, str, str, int, bool, datetime]


def rejection_row(seq: int, env: envelope.Envelope) -> Row | None:
    if env.type != EVENT_TYPE:
        return None
    data = env.data
    ingest_seq = data.get("ingest_seq")
    return (
        seq,
        env.id,
        str(data.get("subject") or ""),
        int(ingest_seq) if isinstance(ingest_seq, int) else None,
        data.get("claimed_type"),
        str(data.get("reason") or "rejected"),
        str(data.get("raw") or ""),
        int(data.get("raw_bytes") or 0),
        bool(data.get("truncated")),
        envelope.parse_time(env.time),
    )

"""Batch events into `batches` and `batch_members` rows: `projection.apply_batch` calls `apply(conn, batch)`
with every event of a batch; `batch.tasks_added` events are folded with `services.core.batches.evolve`
(the same fold the API uses on the log when the projection lags), so rebuild produces the same rows.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.core import batches, db, envelope

LOAD_SQL = f"SELECT {', '.join(batches.BATCH_COLUMNS)} FROM batches WHERE batch_id = ANY($1::text[])"
UPSERT_SQL = f"""
INSERT INTO batches ({", ".join(batches.BATCH_COLUMNS)}) VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (batch_id) DO UPDATE SET task_count = EXCLUDED.task_count, last_seq = EXCLUDED.last_seq
WHERE batches.last_seq < EXCLUDED.last_seq
"""
INSERT_MEMBER_SQL = f"""
INSERT INTO batch_members ({", ".join(batches.MEMBER_COLUMNS)}) VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (batch_id, batch_index) DO NOTHING
"""


async def apply(conn: db.Conn, batch: Sequence[tuple[int, envelope.Envelope]]) -> None:
    events = [(seq, env) for seq, env in batch if env.type == batches.EVENT_TYPE]
    if not events:
        return
    ids = sorted({str(env.data["batch_id"]) for _, env in events})
    rows = {r["batch_id"]: dict(r) for r in await conn.fetch(LOAD_SQL, ids)}
    members: list[batches.Row] = []
    for seq, env in events:
        batch_id = str(env.data["batch_id"])
        row, added = batches.evolve(rows.get(batch_id), seq, env)
        if row is not None:
            rows[batch_id] = row
        members.extend(added)
    touched = sorted({str(env.data["batch_id"]) for _, env in events})
    await conn.executemany(UPSERT_SQL, [tuple(rows[b][c] for c in batches.BATCH_COLUMNS) for b in touched if b in rows])
    if members:
        await conn.executemany(INSERT_MEMBER_SQL, [tuple(m[c] for c in batches.MEMBER_COLUMNS) for m in members])

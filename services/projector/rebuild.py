"""`headrace rebuild`: re-project the whole event log into a fresh schema, then swap it in.

The API keeps serving the old rows until the swap, which happens in one transaction that
holds the projection lock and first catches up to the end of the stream, so the live
projector resumes on the new rows exactly where the rebuild stopped. No side effects:
nothing is published, no plugin runs.
"""

from __future__ import annotations

import time

import asyncpg

from services.core import bus as bus_mod
from services.core import db, logging, subjects
from services.projector import projection, stream_reader
from services.projector.sql import queries

log = logging.get("rebuild")

REBUILD_SCHEMA = f"{db.SCHEMA}_rebuild"


async def _catch_up(bus: bus_mod.Bus, conn: asyncpg.Connection, reader: stream_reader.EventReader, position: int,
                    events: int) -> tuple[int, int]:
    """Project from `reader` up to the stream's current last sequence; returns (position, events seen)."""
    target = await bus.stream_last_seq(subjects.EVENTS)
    while position < target:
        batch = await reader.next_batch(wait_s=2.0)
        if not batch:
            break
        events += len(batch)
        position = await projection.apply_batch(conn, batch)
    return position, events


async def rebuild(bus: bus_mod.Bus, database_url: str, *, batch_size: int = 2000) -> dict[str, int | float]:
    started = time.monotonic()
    conn: asyncpg.Connection = await asyncpg.connect(database_url)
    try:
        await db._init_connection(conn)
        await conn.execute(f"DROP SCHEMA IF EXISTS {REBUILD_SCHEMA} CASCADE")
        await db.migrate(conn, REBUILD_SCHEMA)
        await conn.execute(f"SET search_path TO {REBUILD_SCHEMA}")
        await conn.execute(queries["write_log_identity"], await bus.stream_identity(subjects.EVENTS))
        async with stream_reader.EventReader(bus, start_seq=1, batch_size=batch_size) as reader:
            position, events = await _catch_up(bus, conn, reader, 0, 0)
            async with conn.transaction():
                # the live projector waits here; the swap sees every event stored before it
                await conn.execute(queries["lock_projection"], db.PROJECTION_LOCK)
                position, events = await _catch_up(bus, conn, reader, position, events)
                old = f"{db.SCHEMA}_old_{int(time.time())}"
                await conn.execute(f"ALTER SCHEMA {db.SCHEMA} RENAME TO {old}")
                await conn.execute(f"ALTER SCHEMA {REBUILD_SCHEMA} RENAME TO {db.SCHEMA}")
                await conn.execute(f"DROP SCHEMA {old} CASCADE")
    finally:
        await conn.close()
    stats = {"events": events, "checkpoint": position, "seconds": round(time.monotonic() - started, 3)}
    log.info("rebuild_done", **stats)
    return stats

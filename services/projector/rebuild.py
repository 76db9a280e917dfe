"""`headrace rebuild`: re-project the whole event log into a fresh schema, then swap it in.

The API keeps serving the old rows until the swap, which happens in one transaction that
holds the projection lock and first catches up to the end of the stream, so the live
projector resumes on the new rows exactly where the rebuild stopped. No side effects:
nothing is published, no plugin runs.

The bulk of the log is projected through the same `projection.apply_batch` as the live
projector, with two things that change only the speed: the listing indexes of `jobs` and
`job_logs` (none of which the projection reads through) are built once after the bulk instead
of row by row, and the next batch is read and decoded while Postgres writes the current one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import asyncpg

from services.core import bus as bus_mod
from services.core import db, logging, subjects
from services.projector import projection, stream_reader
from services.projector.sql import queries

log = logging.get("rebuild")

REBUILD_SCHEMA = f"{db.SCHEMA}_rebuild"
#: batches read ahead of the one being written
READ_AHEAD = 2
#: the tables whose secondary indexes are built after the bulk (the projection reads them by primary key)
BULK_TABLES = ("jobs", "job_logs")
#: secondary indexes of BULK_TABLES in the rebuild schema (not those backing a constraint)
INDEXES_SQL = """
SELECT indexname, indexdef FROM pg_indexes
WHERE schemaname = $1 AND tablename = ANY($2::text[])
  AND indexname NOT IN (SELECT conname FROM pg_constraint WHERE connamespace = $1::regnamespace)
ORDER BY indexname
"""


async def _read_ahead(reader: stream_reader.EventReader, out: asyncio.Queue[projection.Batch], target: int) -> None:
    """Batches from `reader` into `out` up to stream seq `target`; [] marks the end (also of a failure,
    which the caller then raises from the task)."""
    position = 0
    try:
        while position < target:
            batch = await reader.next_batch(wait_s=2.0)
            if not batch:
                break
            position = batch[-1][0]
            await out.put(batch)
    finally:
        await out.put([])


async def _catch_up(
    bus: bus_mod.Bus, conn: db.Conn, reader: stream_reader.EventReader, position: int, events: int
) -> tuple[int, int]:
    """Project from `reader` up to the stream's current last sequence; returns (position, events seen)."""
    target = await bus.stream_last_seq(subjects.EVENTS)
    if position >= target:
        return position, events
    batches: asyncio.Queue[projection.Batch] = asyncio.Queue(maxsize=READ_AHEAD)
    feeder = asyncio.create_task(_read_ahead(reader, batches, target))
    try:
        while batch := await batches.get():
            events += len(batch)
            position = await projection.apply_batch(conn, batch)
        await feeder
    finally:
        if not feeder.done():
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder
    return position, events


async def _drop_bulk_indexes(conn: db.Conn) -> list[str]:
    """Drop the secondary indexes of BULK_TABLES in the rebuild schema; returns their definitions."""
    rows = await conn.fetch(INDEXES_SQL, REBUILD_SCHEMA, list(BULK_TABLES))
    for row in rows:
        await conn.execute(f'DROP INDEX {REBUILD_SCHEMA}."{row["indexname"]}"')
    return [row["indexdef"] for row in rows]


async def rebuild(bus: bus_mod.Bus, database_url: str, *, batch_size: int = 5000) -> dict[str, int | float]:
    started = time.monotonic()
    conn: asyncpg.Connection = await asyncpg.connect(database_url)
    try:
        await db._init_connection(conn)
        await conn.execute(f"DROP SCHEMA IF EXISTS {REBUILD_SCHEMA} CASCADE")
        await db.migrate(conn, REBUILD_SCHEMA)
        await conn.execute(f"SET search_path TO {REBUILD_SCHEMA}")
        await conn.execute(queries["write_log_identity"], await bus.stream_identity(subjects.EVENTS))
        index_defs = await _drop_bulk_indexes(conn)
        async with stream_reader.EventReader(bus, start_seq=1, batch_size=batch_size) as reader:
            position, events = await _catch_up(bus, conn, reader, 0, 0)
            await conn.execute("SET maintenance_work_mem = '256MB'")
            for definition in index_defs:  # the very statements the migrations ran
                await conn.execute(definition)
            await conn.execute("RESET maintenance_work_mem")
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

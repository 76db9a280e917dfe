"""Apply a batch of events to the read models in one transaction with the checkpoint.

Used by the live projector and by rebuild alike, so both produce the same rows. The
advisory lock makes batch writers take turns (several projectors, or rebuild's swap);
events at or below the checkpoint are skipped, so overlapping batches are harmless.

Every event is folded as `values.storable_envelope` makes it (U+0000 and lone surrogates become
U+FFFD: the one substitution between the log and the rows). Should a batch still fail on its
data, it is applied again one event at a time, and an event that fails on its own is recorded in
`projection_failures` and passed over: the result is that of applying the events one by one, so
it does not depend on where batches begin and rebuild gives the same rows.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import asyncpg
import orjson

from services.core import db, envelope, logging, values
from services.projector import batch_rows, ingest_rows, read_models, stream_reader, summary_rows, trace_rows
from services.projector.sql import queries

Batch = Sequence[tuple[int, envelope.Envelope]]

log = logging.get("projection")

#: errors that come from an event's data (not from the database being away): retried one event at a time
DATA_ERRORS = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.ProgramLimitExceededError,
    ValueError,
    TypeError,
    KeyError,
    AttributeError,
    IndexError,
    OverflowError,
    RecursionError,
)
#: characters of a failure's error message kept in its row
ERROR_LIMIT = 2000
#: the jsonb columns of the jobs and job_logs rows (sent as JSON text in the multi-row upserts)
JOB_JSON = frozenset({"payload", "result"})
ATTEMPT_JSON = frozenset({"result", "logs"})


async def checkpoint(conn: db.Conn) -> int:
    return int(await conn.fetchval(queries["read_checkpoint"]))


async def apply_batch(conn: db.Conn, batch: Batch) -> int:
    """Project `batch` (ordered by stream seq); returns the checkpoint after it."""
    storable = [(seq, values.storable_envelope(env)) for seq, env in batch]
    try:
        return await _apply(conn, storable)
    except DATA_ERRORS as exc:
        if len(storable) == 1:
            return await _record_failure(conn, *storable[0], exc)
        log.warning(
            "batch_failed_applying_one_by_one", first=storable[0][0], last=storable[-1][0], error=_describe(exc)
        )
    position = await checkpoint(conn)
    for event in storable:
        try:
            position = await _apply(conn, [event])
        except DATA_ERRORS as exc:
            position = await _record_failure(conn, *event, exc)
    return position


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:ERROR_LIMIT]


async def _record_failure(conn: db.Conn, seq: int, env: envelope.Envelope, exc: BaseException) -> int:
    """Record the event that cannot be projected and move the checkpoint past it."""
    error = values.storable_text(_describe(exc))
    plugin, command = env.data.get("plugin"), env.data.get("command")
    with logging.job_context(env.job_id, correlation_id=env.correlation_id, plugin=plugin, command=command):
        log.error("event_not_projectable", seq=seq, event_id=env.id, type=env.type, error=error)
    async with conn.transaction():
        await conn.execute(queries["lock_projection"], db.PROJECTION_LOCK)
        done = await checkpoint(conn)
        if seq <= done:
            return done
        await conn.execute(queries["insert_projection_failure"], seq, env.id, env.type, error)
        await conn.execute(queries["write_checkpoint"], seq)
        return seq


async def _apply(conn: db.Conn, batch: Batch) -> int:
    async with conn.transaction():
        await conn.execute(queries["lock_projection"], db.PROJECTION_LOCK)
        done = await checkpoint(conn)
        fresh = [(seq, env) for seq, env in batch if seq > done]
        if not fresh:
            return done
        await _apply_jobs(conn, fresh)
        await _apply_traces(conn, fresh)
        await _apply_ingest_rejections(conn, fresh)
        await batch_rows.apply(conn, fresh)
        await _apply_undecodable(conn, fresh)
        last = fresh[-1][0]
        await conn.execute(queries["write_checkpoint"], last)
        return last


async def _apply_jobs(conn: db.Conn, batch: Batch) -> None:
    job_ids = sorted({env.job_id for _, env in batch if env.job_id and env.type.startswith("job.")})
    if not job_ids:
        return
    jobs = {r["job_id"]: dict(r) for r in await conn.fetch(queries["load_jobs"], job_ids)}
    attempt_ids = sorted({f"{k[0]}-{k[1]}" for _, env in batch if (k := read_models.attempt_key(env))})
    attempts = (
        {r["log_id"]: dict(r) for r in await conn.fetch(queries["load_attempts"], attempt_ids)} if attempt_ids else {}
    )
    counted_jobs = {job_id: summary_rows.job_key(row) for job_id, row in jobs.items()}
    counted_totals = {job_id: summary_rows.total_key(row) for job_id, row in jobs.items()}
    counted_attempts = {log_id: summary_rows.attempt_key(row) for log_id, row in attempts.items()}
    touched_jobs: set[str] = set()
    touched_attempts: set[str] = set()
    for seq, env in batch:
        if env.job_id is None:
            continue
        row = read_models.evolve_job(jobs.get(env.job_id), seq, env)
        if row is not None:
            jobs[env.job_id] = row
            touched_jobs.add(env.job_id)
        key = read_models.attempt_key(env)
        if key is not None:
            log_id = f"{key[0]}-{key[1]}"
            attempt_row = read_models.evolve_attempt(attempts.get(log_id), seq, env, jobs.get(env.job_id))
            if attempt_row is not None:
                attempts[log_id] = attempt_row
                touched_attempts.add(log_id)
    if touched_jobs:
        await conn.execute(
            queries["upsert_jobs"],
            *_columns([jobs[j] for j in sorted(touched_jobs)], read_models.JOB_COLUMNS, JOB_JSON),
        )
    if touched_attempts:
        await conn.execute(
            queries["upsert_attempts"],
            *_columns([attempts[a] for a in sorted(touched_attempts)], read_models.ATTEMPT_COLUMNS, ATTEMPT_JSON),
        )
    await summary_rows.apply(
        conn,
        summary_rows.deltas((counted_jobs.get(j), summary_rows.job_key(jobs[j])) for j in touched_jobs),
        summary_rows.deltas((counted_attempts.get(a), summary_rows.attempt_key(attempts[a])) for a in touched_attempts),
        summary_rows.deltas((counted_totals.get(j), summary_rows.total_key(jobs[j])) for j in touched_jobs),
    )


def _json_text(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _columns(rows: list[dict[str, Any]], columns: tuple[str, ...], json_columns: frozenset[str]) -> list[list[Any]]:
    """`rows` as one list per column (the arrays of a multi-row upsert); jsonb columns as JSON text."""
    return [[_json_text(row[c]) for row in rows] if c in json_columns else [row[c] for row in rows] for c in columns]


async def _apply_traces(conn: db.Conn, batch: Batch) -> None:
    async def projected(event_ids: Collection[str]) -> dict[str, int]:
        return {r["event_id"]: r["id"] for r in await conn.fetch(queries["trace_ids_by_event"], list(event_ids))}

    rows = await trace_rows.trace_rows(batch, projected)
    if rows:
        await conn.executemany(queries["insert_trace"], rows)


async def _apply_ingest_rejections(conn: db.Conn, batch: Batch) -> None:
    rows = [row for seq, env in batch if (row := ingest_rows.rejection_row(seq, env)) is not None]
    if rows:
        await conn.executemany(ingest_rows.INSERT_SQL, rows)


async def _apply_undecodable(conn: db.Conn, batch: Batch) -> None:
    """Messages of the stream that are not envelopes (stream_reader's stand-ins) into `projection_failures`."""
    rows = [
        (seq, env.id, env.type, values.storable_text(str(env.data.get("error"))))
        for seq, env in batch
        if env.type == stream_reader.UNDECODABLE
    ]
    if rows:
        await conn.executemany(queries["insert_projection_failure"], rows)

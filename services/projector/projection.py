"""Apply a batch of events to the read models in one transaction with the checkpoint.

Used by the live projector and by rebuild alike, so both produce the same rows. The
advisory lock makes batch writers take turns (several projectors, or rebuild's swap);
events at or below the checkpoint are skipped, so overlapping batches are harmless.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from services.core import db, envelope
from services.projector import ingest_rows, read_models, trace_rows
from services.projector.sql import queries

Batch = Sequence[tuple[int, envelope.Envelope]]


async def checkpoint(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval(queries["read_checkpoint"]))


async def apply_batch(conn: asyncpg.Connection, batch: Batch) -> int:
    """Project `batch` (ordered by stream seq); returns the checkpoint after it."""
    async with conn.transaction():
        await conn.execute(queries["lock_projection"], db.PROJECTION_LOCK)
        done = await checkpoint(conn)
        fresh = [(seq, env) for seq, env in batch if seq > done]
        if not fresh:
            return done
        await _apply_jobs(conn, fresh)
        await _apply_traces(conn, fresh)
        await _apply_ingest_rejections(conn, fresh)
        last = fresh[-1][0]
        await conn.execute(queries["write_checkpoint"], last)
        return last


async def _apply_jobs(conn: asyncpg.Connection, batch: Batch) -> None:
    job_ids = sorted({env.job_id for _, env in batch if env.job_id and env.type.startswith("job.")})
    if not job_ids:
        return
    jobs = {r["job_id"]: dict(r) for r in await conn.fetch(queries["load_jobs"], job_ids)}
    attempt_ids = sorted({f"{k[0]}-{k[1]}" for _, env in batch if (k := read_models.attempt_key(env))})
    attempts = {r["log_id"]: dict(r) for r in await conn.fetch(queries["load_attempts"], attempt_ids)} if attempt_ids else {}
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
        await conn.executemany(
            queries["upsert_job"],
            [tuple(jobs[j][c] for c in read_models.JOB_COLUMNS) for j in sorted(touched_jobs)],
        )
    if touched_attempts:
        await conn.executemany(
            queries["upsert_attempt"],
            [tuple(attempts[a][c] for c in read_models.ATTEMPT_COLUMNS) for a in sorted(touched_attempts)],
        )


async def _apply_traces(conn: asyncpg.Connection, batch: Batch) -> None:
    rows = [row for seq, env in batch if (row := trace_rows.trace_row(seq, env)) is not None]
    if rows:
        await conn.executemany(queries["insert_trace"], rows)


async def _apply_ingest_rejections(conn: asyncpg.Connection, batch: Batch) -> None:
    rows = [row for seq, env in batch if (row := ingest_rows.rejection_row(seq, env)) is not None]
    if rows:
        await conn.executemany(ingest_rows.INSERT_SQL, rows)

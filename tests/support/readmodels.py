"""Every read-model table as plain comparable rows, and the projector's checkpoint: what a
crash test compares between the live projection and a fresh `headrace rebuild`.
"""

from __future__ import annotations

import asyncpg

from services.core import db

#: bookkeeping, not read models: when each migration ran differs between the two schemas
NOT_READ_MODELS = frozenset({"schema_migrations"})


async def snapshot(database_url: str, *, schema: str = db.SCHEMA) -> dict[str, list[str]]:
    """table → its rows as JSON text (every column), sorted."""
    conn = await asyncpg.connect(database_url)
    try:
        tables = [
            r["table_name"]
            for r in await conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = $1 AND table_type = 'BASE TABLE'",
                schema,
            )
        ]
        out: dict[str, list[str]] = {}
        for table in sorted(set(tables) - NOT_READ_MODELS):
            rows = await conn.fetch(f'SELECT to_jsonb(t)::text AS row FROM "{schema}"."{table}" t')
            out[table] = sorted(r["row"] for r in rows)
        return out
    finally:
        await conn.close()


async def checkpoint(database_url: str, *, schema: str = db.SCHEMA) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval(f"SELECT stream_seq FROM \"{schema}\".checkpoint WHERE name = 'events'") or 0)
    finally:
        await conn.close()


async def job_statuses(database_url: str, *, schema: str = db.SCHEMA) -> dict[str, str]:
    conn = await asyncpg.connect(database_url)
    try:
        return {r["job_id"]: r["status"] for r in await conn.fetch(f'SELECT job_id, status FROM "{schema}".jobs')}
    finally:
        await conn.close()


def differences(live: dict[str, list[str]], rebuilt: dict[str, list[str]]) -> list[str]:
    """One line per table whose rows (as `snapshot` gives them) differ between the two, with an example row
    found only on each side."""
    out = []
    for table in sorted(set(live) | set(rebuilt)):
        if live.get(table) != rebuilt.get(table):
            a, b = set(live.get(table, [])), set(rebuilt.get(table, []))
            out.append(
                f"{table}: {len(live.get(table, []))} rows live, {len(rebuilt.get(table, []))} rebuilt; "
                f"only live e.g. {sorted(a - b)[:1]}; only rebuilt e.g. {sorted(b - a)[:1]}"
            )
    return out

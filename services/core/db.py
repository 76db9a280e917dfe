"""Postgres access: the asyncpg pool (search_path = the read-model schema) and migrations.

Only the projector writes rows; every service may apply migrations at start (DDL under an
advisory lock, idempotent) so the API can answer as soon as it is up.
"""

from __future__ import annotations

import asyncio
import re
from importlib.resources.abc import Traversable
from typing import Any, TypeAlias

import asyncpg
import orjson

from services.core import errors, logging, resources

#: a connection as the code takes it: one of its own (`asyncpg.connect`) or one borrowed from a pool
#: (`pool.acquire()` hands a proxy with the same methods)
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"

log = logging.get("db")

SCHEMA = "headrace"
MIGRATION_LOCK = 0x4845_4144  # "HEAD": serialises migrations across processes
PROJECTION_LOCK = 0x5052_4F4A  # "PROJ": one batch writer at a time, rebuild's swap included
#: what a call on a connection that the server or the network ended may raise (a terminated backend, a
#: restart, a dropped socket): InternalClientError is what asyncpg raises when the server's goodbye arrived
#: between two calls (the protocol is left mid-operation), so loops that retry treat it as the others
CONNECTION_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
)
PROJECTOR_HOLDER_LOCK = 0x5052_4F48  # "PROH": held for its session by the active projector (standbys wait)
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


async def _init_connection(conn: Conn) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name, encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads, schema="pg_catalog"
        )


async def create_pool(url: str, *, schema: str = SCHEMA, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    try:
        pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            init=_init_connection,
            server_settings={"search_path": schema, "application_name": "headrace"},
            command_timeout=30,
        )
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise errors.TransientError(f"cannot connect to Postgres: {exc}") from exc
    assert pool is not None
    return pool


def migration_files() -> list[Traversable]:
    return resources.migrations()


async def answers(pool: asyncpg.Pool, *, timeout_s: float) -> tuple[bool, str | None]:
    """(ok, error): whether the pool answers `SELECT 1` within `timeout_s` (the health checks' Postgres probe)."""
    try:
        await asyncio.wait_for(pool.fetchval("SELECT 1"), timeout=timeout_s)
    except Exception as exc:  # any failure of the check is the answer
        return False, str(exc) or type(exc).__name__
    return True, None


async def migrate(conn: Conn, schema: str = SCHEMA) -> list[str]:
    """Apply every migration not yet applied inside `schema`; returns the names applied."""
    if not _SCHEMA_NAME.match(schema):
        raise ValueError(f"bad schema name {schema!r}")
    applied: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await conn.execute(f"SET LOCAL search_path TO {schema}")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for file in migration_files():
            if file.name in done:
                continue
            await conn.execute(file.read_text())
            await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", file.name)
            applied.append(file.name)
    if applied:
        log.info("migrations_applied", schema=schema, names=applied)
    return applied


async def pool_for(config: Any, *, pool: asyncpg.Pool | None = None, max_size: int = 10) -> asyncpg.Pool:
    """`pool` (migrations applied), or a new pool to the config's database."""
    if pool is not None:
        async with pool.acquire() as conn:
            await migrate(conn)
        return pool
    if not config.database_url:
        raise errors.ConfigError("DATABASE_URL (or database.url) is not set")
    return await connect_and_migrate(config.database_url, max_size=max_size)


async def connect_and_migrate(url: str, **pool_args: Any) -> asyncpg.Pool:
    pool = await create_pool(url, **pool_args)
    async with pool.acquire() as conn:
        await migrate(conn)
    return pool

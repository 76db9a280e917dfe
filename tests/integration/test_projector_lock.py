"""The projector's Postgres session lock (services/projector/holder.py) on a real database: held by one
session at a time, and what happens when Postgres ends the holder's session under it (an admin's
pg_terminate_backend, a failover): the holder finds out at its next renewal, never with an error that
would kill its leadership loop, and takes the lock again once it is free."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from services.core import bus as bus_mod
from services.core import db
from services.projector import holder


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[bus_mod.Bus]:
    b = await bus_mod.Bus.connect(nats_url, name="projector-lock-test")
    await b.ensure_topology()
    yield b
    await b.close()


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    yield p
    p.terminate()  # a failed test may leave the lock's connection out of the pool


def lock(pool: asyncpg.Pool, bus: bus_mod.Bus, name: str) -> holder.SessionLock:
    return holder.SessionLock(pool, bus, holder=name, source=f"projector/{name}", ttl_s=5.0, renew_s=1.0)


async def lock_holders(database_url: str) -> list[int]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            # pg_locks is the whole server's: other tests' projectors hold the same key in their databases
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            db.PROJECTOR_HOLDER_LOCK & 0xFFFFFFFF,
        )
        return [int(r["pid"]) for r in rows]
    finally:
        await conn.close()


async def test_a_terminated_lock_session_is_a_lost_renewal_then_the_lock_is_taken_again(
    pool: asyncpg.Pool, bus: bus_mod.Bus, database_url: str
) -> None:
    a, b = lock(pool, bus, "a"), lock(pool, bus, "b")
    try:
        await lock_is_lost_and_taken_again(a, b, database_url)
    finally:
        await a.close()
        await b.close()


async def lock_is_lost_and_taken_again(a: holder.SessionLock, b: holder.SessionLock, database_url: str) -> None:
    assert await a.try_acquire() and a.valid()
    assert not await b.try_acquire()  # one session at a time
    for pause_s in (0.0, 0.0, 0.0, 0.01, 0.05, 0.2):  # the renewal may come before or after the goodbye arrives
        (pid,) = await lock_holders(database_url)
        admin = await asyncpg.connect(database_url)
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await admin.close()
        await asyncio.sleep(pause_s)
        # the renewal that finds the session gone says so (False): it does not raise
        assert await a.renew() is False and not a.valid()
        # and a later try on a fresh session takes the lock again (b may race it: one of them wins)
        got_a = await a.try_acquire()
        assert got_a != await b.try_acquire()
        if not got_a:
            a, b = b, a
    await a.release()
    assert await b.try_acquire()
    await b.release()

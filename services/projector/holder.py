"""Which projector projects: the holder of a Postgres session advisory lock (`db.PROJECTOR_HOLDER_LOCK`).

The lock is held on one connection of the projector's pool, kept out of the pool for as long as the
process runs: standbys poll `pg_try_advisory_lock` on it, the holder checks every renew interval that
its session is still there. Postgres releases the lock the moment that session ends — the process
exits or is killed (its socket closes), or the server drops the connection — so a standby takes over
within one poll (half the renew interval) of the holder's death; TCP keepalives on the connection
bound how long a silently vanished host holds it. A Postgres lock rather than the dispatcher's KV
lease because Postgres is what the projector writes: the session that holds the lock is the one
whose death frees it, no clock involved (correctness does not rest on it: every batch still takes
the transaction lock and skips what the checkpoint already covers, services/projector/projection.py).

For /healthz the holder also writes `leader.projector` ({holder, source, since, until}, `until` one
lease ttl after its last check) in the `agents` KV bucket, and standbys their `standby.projector.*`
records (services/core/leases.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime, timedelta

import asyncpg

from services.core import bus as bus_mod
from services.core import db, envelope, leases, logging

log = logging.get("projector.holder")

ROLE = "projector"
#: keepalives of the lock's connection: a holder whose host vanished is noticed within ~idle + interval * count
KEEPALIVES = {"tcp_keepalives_idle": "5", "tcp_keepalives_interval": "2", "tcp_keepalives_count": "3"}
CHECK_TIMEOUT_S = 2.0
#: a renewal that fails with one of these has lost the session (and so the lock)
RENEW_ERRORS: tuple[type[Exception], ...] = (*db.CONNECTION_ERRORS, TimeoutError)


class SessionLock:
    """The projector's `leadership.Authority`."""

    def __init__(
        self, pool: asyncpg.Pool, bus: bus_mod.Bus, *, holder: str, source: str, ttl_s: float, renew_s: float
    ) -> None:
        self.pool = pool
        self.bus = bus
        self.holder = holder
        self.source = source
        self.ttl_s = ttl_s
        self.renew_s = renew_s
        self._conn: asyncpg.pool.PoolConnectionProxy[asyncpg.Record] | None = None
        self._held = False
        self._valid_until = 0.0
        self.since: datetime | None = None

    def valid(self) -> bool:
        return self._held and time.monotonic() < self._valid_until

    def remaining_s(self) -> float:
        return max(0.0, self._valid_until - time.monotonic()) if self._held else 0.0

    @staticmethod
    def _open(conn: asyncpg.pool.PoolConnectionProxy[asyncpg.Record] | None) -> bool:
        """Whether `conn` is still a live session. A proxy whose connection the pool already took back
        (closed or expired under it) raises InterfaceError on every call, is_closed() included."""
        if conn is None:
            return False
        try:
            return not conn.is_closed()
        except db.CONNECTION_ERRORS:
            return False

    async def _connection(self) -> asyncpg.pool.PoolConnectionProxy[asyncpg.Record]:
        if self._conn is not None and self._open(self._conn):
            return self._conn
        await self._drop()
        conn = await self.pool.acquire()
        try:
            for name, value in KEEPALIVES.items():
                await conn.execute(f"SET {name} = {value}")
        except db.CONNECTION_ERRORS:
            await self.pool.release(conn)
            raise
        self._conn = conn
        return conn

    async def _drop(self) -> None:
        """Give the connection back (the pool's reset unlocks what the session held)."""
        conn, self._conn = self._conn, None
        self._held = False
        if conn is not None:
            with contextlib.suppress(Exception):
                await self.pool.release(conn, timeout=CHECK_TIMEOUT_S)

    async def try_acquire(self) -> bool:
        sent = time.monotonic()
        if self._held and self._open(self._conn):  # still ours (a session lock)
            return await self.renew()
        try:
            conn = await self._connection()
            got = await conn.fetchval(
                "SELECT pg_try_advisory_lock($1)", db.PROJECTOR_HOLDER_LOCK, timeout=CHECK_TIMEOUT_S
            )
        except db.CONNECTION_ERRORS as exc:
            await self._drop()
            raise TimeoutError(f"projector lock unavailable: {exc}") from exc
        if not got:
            return False
        self._held = True
        self.since = envelope.now()
        self._valid_until = sent + self.ttl_s
        await self._announce()
        return True

    async def renew(self) -> bool:
        """False when the lock's session is gone (so is the lock)."""
        if not self._held or self._conn is None:
            return False
        sent = time.monotonic()
        try:
            await self._conn.fetchval("SELECT 1", timeout=CHECK_TIMEOUT_S)
        except RENEW_ERRORS as exc:
            log.warning("projector_lock_session_lost", error=str(exc) or type(exc).__name__)
            await self._drop()
            return False
        self._valid_until = sent + self.ttl_s
        await self._announce()
        return True

    async def _announce(self) -> None:
        """`leader.projector` for /healthz: best effort (NATS being away does not make the lock less held)."""
        assert self.since is not None
        now = envelope.now()
        record = leases.lease_record(
            ROLE,
            holder=self.holder,
            source=self.source,
            since=self.since,
            until=now + timedelta(seconds=self.ttl_s),
            ttl_s=self.ttl_s,
            renew_s=self.renew_s,
        )
        try:
            await asyncio.wait_for(leases.announce(self.bus, ROLE, record), timeout=CHECK_TIMEOUT_S)
        except Exception as exc:  # visibility only
            log.warning("projector_holder_unannounced", error=str(exc) or type(exc).__name__)

    def forget(self) -> None:
        self._valid_until = 0.0

    async def release(self) -> None:
        held = self._held
        conn = self._conn
        if held and conn is not None and self._open(conn):
            with contextlib.suppress(Exception):
                await conn.fetchval("SELECT pg_advisory_unlock($1)", db.PROJECTOR_HOLDER_LOCK, timeout=CHECK_TIMEOUT_S)
        self._held = False
        self.forget()
        if held:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(leases.withdraw(self.bus, ROLE, self.holder), timeout=CHECK_TIMEOUT_S)

    async def close(self) -> None:
        """Return the connection to the pool (on stop, before the pool closes)."""
        await self._drop()

"""Projector service: evt.> (ordered, from checkpoint+1) → read-model rows + checkpoint,
one transaction per batch. Nothing else writes Postgres rows.

Several projectors may run; one projects: the holder of a Postgres session lock
(services/projector/holder.py). The others stand by and take over within half a renew
interval of its death (services/core/leadership.py).
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg

from services.core import bus as bus_mod
from services.core import config as config_mod
from services.core import db, errors, leadership, leases, lifecycle, logging, subjects
from services.projector import holder, projection, rebuild, stream_reader
from services.projector.sql import queries

log = logging.get("projector")

RETRY_DELAY_S = 1.0
#: what interrupts a projection run without ending the service: it starts again after RETRY_DELAY_S
RETRIED: tuple[type[Exception], ...] = (*db.CONNECTION_ERRORS, errors.TransientError)


class Projector(lifecycle.Service):
    name = "projector"

    def __init__(
        self,
        config: config_mod.Config,
        *,
        bus: bus_mod.Bus | None = None,
        pool: asyncpg.Pool | None = None,
        batch_size: int = 500,
    ) -> None:
        super().__init__()
        self.config = config
        self.bus = bus
        self.pool = pool
        self._own_bus = bus is None
        self._own_pool = pool is None
        self.batch_size = batch_size
        self.position = 0
        self._advanced = asyncio.Condition()
        self.source = config_mod.instance_name("projector")
        self.lock: holder.SessionLock | None = None
        self.leadership: leadership.Leadership | None = None

    async def start(self) -> None:
        self.bus = await bus_mod.open_for(self.config, name=self.source, bus=self.bus)
        self.pool = await db.pool_for(self.config, pool=self.pool, max_size=4)
        member = leases.holder_id(self.name)
        renew_s = self.config.leader_lease_renew_s
        self.lock = holder.SessionLock(
            self.pool,
            self.bus,
            holder=member,
            source=self.source,
            ttl_s=self.config.leader_lease_ttl_s,
            renew_s=renew_s,
        )
        self.leadership = leadership.Leadership(
            self.lock,
            role=self.name,
            source=self.source,
            elected=self._elected,
            deposed=self._deposed,
            renew_s=renew_s,
            standby=leases.Standby(self.bus, self.name, holder=member, source=self.source, interval_s=renew_s),
        )
        await self.leadership.start()  # a lone projector projects when start returns
        self.spawn("leadership", self.leadership.run(self.stop_event))
        log.info("projector_started", active=self.leadership.active)

    async def _elected(self, term: leadership.Term) -> None:
        term.spawn("project", self._run(term.ended))
        log.info("projector_active")

    async def _deposed(self) -> None:
        log.info("projector_standing_by")

    async def close(self) -> None:
        if self.lock is not None:
            await self.lock.close()
        if self._own_pool and self.pool is not None:
            await self.pool.close()
        if self._own_bus and self.bus is not None:
            await self.bus.close()

    async def _run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._project(stop)
            except RETRIED as exc:
                log.warning("projection_interrupted", error=str(exc) or type(exc).__name__)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=RETRY_DELAY_S)

    async def _project(self, stop: asyncio.Event) -> None:
        assert self.pool is not None and self.bus is not None
        identity = await self.bus.stream_identity(subjects.EVENTS)
        last_seq = await self.bus.stream_last_seq(subjects.EVENTS)
        async with self.pool.acquire() as conn:
            start = await projection.checkpoint(conn)
            recorded = await conn.fetchval(queries["read_log_identity"])
            if recorded is None and start <= last_seq:
                await conn.execute(queries["write_log_identity"], identity)
        # rows from another log: a different stream, or (rows older than this check) a checkpoint past its end
        foreign = (recorded is not None and recorded != identity) or start > last_seq
        if foreign:
            # these rows come from another event log (a fresh NATS store on a reused database):
            # re-project this one rather than skip its events up to a checkpoint that is not its own
            log.warning("read_models_from_another_event_log", recorded=recorded, current=identity)
            assert self.config.database_url, "DATABASE_URL is not set"
            await rebuild.rebuild(self.bus, self.config.database_url)
            return
        await self._moved_to(start)
        async with stream_reader.EventReader(self.bus, start_seq=start + 1, batch_size=self.batch_size) as reader:
            while not stop.is_set():
                batch = await reader.next_batch()
                if not batch:
                    continue
                async with self.pool.acquire() as conn:
                    position = await projection.apply_batch(conn, batch)
                await self._moved_to(position)

    async def _moved_to(self, position: int) -> None:
        async with self._advanced:
            self.position = position
            self._advanced.notify_all()

    async def wait_for(self, seq: int, timeout_s: float = 10.0) -> None:
        """Read-your-writes for tests and embedders: wait until the events up to `seq` are projected."""
        async with self._advanced:
            await asyncio.wait_for(self._advanced.wait_for(lambda: self.position >= seq), timeout=timeout_s)

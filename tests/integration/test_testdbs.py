"""The sweep of crashed sessions' databases drops only what certainly belongs to nobody, and a session's
own databases go at its end, several at a time."""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import asyncpg

from tests.support import infra, testdbs


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _name(*, host: str = testdbs.HOST, pid: int, age_s: float) -> str:
    return f"hr_test_{host}_{pid}_{int(time.time() - age_s)}_{uuid.uuid4().hex[:8]}"


async def _existing(admin: asyncpg.Connection, names: list[str]) -> set[str]:
    rows = await admin.fetch("SELECT datname FROM pg_database WHERE datname = ANY($1::text[])", names)
    return {r["datname"] for r in rows}


async def test_sweep_drops_only_abandoned_databases(postgres: infra.Postgres) -> None:
    old = testdbs.LEFTOVER_AGE_S + 60
    dead = _dead_pid()
    abandoned = _name(pid=dead, age_s=old)
    kept = {
        "young": _name(pid=dead, age_s=60),
        "running session": _name(pid=os.getppid(), age_s=old),
        "this session": _name(pid=os.getpid(), age_s=old),
        "other host": _name(host="000000" if testdbs.HOST != "000000" else "111111", pid=dead, age_s=old),
        "old form": f"hr_test_{uuid.uuid4().hex[:12]}",
        "connected": _name(pid=dead, age_s=old),
    }
    names = [abandoned, *kept.values()]
    admin = await asyncpg.connect(postgres.admin_url)
    user = None
    try:
        for name in names:
            await admin.execute(f'CREATE DATABASE "{name}"')
        user = await asyncpg.connect(postgres.url_for(kept["connected"]))
        dropped = await testdbs.sweep_leftovers(postgres.admin_url)
        assert abandoned in dropped
        assert await _existing(admin, names) == set(kept.values())
    finally:
        if user is not None:
            await user.close()
        await testdbs.drop_all(postgres.admin_url, names)
        await admin.close()


async def test_drop_all_drops_connected_databases_concurrently(postgres: infra.Postgres) -> None:
    names = [testdbs.new_name("test") for _ in range(20)]
    admin = await asyncpg.connect(postgres.admin_url)
    try:
        for name in names:
            await admin.execute(f'CREATE DATABASE "{name}"')
        user = await asyncpg.connect(postgres.url_for(names[0]))  # a leaked connection does not stop the drop
        try:
            assert sorted(await testdbs.drop_all(postgres.admin_url, names)) == sorted(names)
        finally:
            await user.close()
        assert await _existing(admin, names) == set()
    finally:
        await testdbs.drop_all(postgres.admin_url, names)
        await admin.close()

"""Names and clean-up of the test sessions' databases (`hr_test_*` per test, `hr_tpl_*` per session).

A name says who made it and when: `hr_test_<host>_<pid>_<epoch>_<random>`, where host is a short hash of
this machine's hostname and pid is the pytest process. Postgres records no creation time for a database,
and a database's owner role or connections say nothing about whether the session that made it still runs,
so the name carries both.

A session drops its own databases once it has finished (`pytest_sessionfinish`), several at a time and
outside any test's timeout. A session that crashed never gets there; the next session on this machine
sweeps such leftovers at its start, dropping one only when all of these hold: it was made on this host,
more than `LEFTOVER_AGE_S` ago, by a process that no longer exists, and nobody is connected to it. The last
check is Postgres's own: the sweep uses a plain DROP DATABASE (no FORCE), which fails when any session is
connected. Names in any other form (another host, the old `hr_test_<random>`) are never swept.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import socket
import time
import uuid
from collections.abc import Iterable

import asyncpg

#: how many DROP DATABASEs run at once at the end of a session
DROP_CONCURRENCY = 8
#: a leftover younger than this is left alone even when its process is gone
LEFTOVER_AGE_S = 6 * 3600

HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]
_NAME = re.compile(r"^hr_(?:test|tpl)_(?P<host>[0-9a-f]{6})_(?P<pid>\d+)_(?P<epoch>\d+)_[0-9a-f]+$")


def new_name(kind: str) -> str:
    """A fresh database name for this process: kind is "test" or "tpl"."""
    return f"hr_{kind}_{HOST}_{os.getpid()}_{int(time.time())}_{uuid.uuid4().hex[:8]}"


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process, alive
        return True
    return True


def is_abandoned(name: str, *, now: float | None = None) -> bool:
    """Whether `name` is one of ours whose session has certainly ended (see the module docstring); the
    connection check comes on top, at the drop."""
    match = _NAME.match(name)
    if match is None or match["host"] != HOST:
        return False
    pid, epoch = int(match["pid"]), int(match["epoch"])
    age = (time.time() if now is None else now) - epoch
    return age > LEFTOVER_AGE_S and pid != os.getpid() and not _process_exists(pid)


async def drop_all(admin_url: str, names: Iterable[str], *, force: bool = True) -> list[str]:
    """Drop `names`, DROP_CONCURRENCY at a time, each on its own connection (DROP DATABASE cannot run
    inside a transaction or a pipeline). Returns the names dropped; a failed drop is skipped."""
    pending = list(dict.fromkeys(names))
    dropped: list[str] = []
    clause = " WITH (FORCE)" if force else ""

    async def worker() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            while pending:
                name = pending.pop()
                with contextlib.suppress(asyncpg.PostgresError):
                    await conn.execute(f'DROP DATABASE IF EXISTS "{name}"{clause}')
                    dropped.append(name)
        finally:
            await conn.close()

    if pending:
        await asyncio.gather(*(worker() for _ in range(min(DROP_CONCURRENCY, len(pending)))))
    return dropped


async def sweep_leftovers(admin_url: str) -> list[str]:
    """Drop the abandoned databases of crashed sessions (no FORCE: a connected database stays)."""
    conn = await asyncpg.connect(admin_url)
    try:
        rows = await conn.fetch(
            """SELECT datname FROM pg_database d
               WHERE (datname LIKE 'hr\\_test\\_%' OR datname LIKE 'hr\\_tpl\\_%')
                 AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)"""
        )
    finally:
        await conn.close()
    return await drop_all(admin_url, [r["datname"] for r in rows if is_abandoned(r["datname"])], force=False)

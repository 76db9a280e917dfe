"""`headrace up` on a machine without Postgres: it initialises and starts a private cluster
under the state directory (as the postgres user when run as root), and a second start reuses it."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from services.core import embedded

pytestmark = pytest.mark.skipif(
    shutil.which("initdb") is None and not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")),
    reason="no initdb on this machine to start a private Postgres with",
)


@pytest.fixture
def state_dir() -> Iterator[Path]:
    # pytest's tmp dirs are private to root; the cluster runs as the postgres user when we are root
    path = Path(tempfile.mkdtemp(prefix="hr-pg-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_private_cluster_starts_resumes_and_stops(state_dir: Path) -> None:
    state = state_dir
    cluster = embedded.EmbeddedPostgres(state)
    admin = await cluster.start()
    try:
        url = await embedded.ensure_database(admin, "headrace")
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("CREATE TABLE kept (v int)")
            await conn.execute("INSERT INTO kept VALUES (42)")
        finally:
            await conn.close()
    finally:
        await cluster.stop()
    again = embedded.EmbeddedPostgres(state)
    admin = await again.start()
    try:
        conn = await asyncpg.connect(await embedded.ensure_database(admin, "headrace"))
        try:
            assert await conn.fetchval("SELECT v FROM kept") == 42
        finally:
            await conn.close()
    finally:
        await again.stop()

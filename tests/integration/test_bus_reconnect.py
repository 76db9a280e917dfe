"""The bus survives the server closing its connection: nats-server ends a client's connection
with an -ERR (here: a subject over its control-line limit, sent through the raw client), and
the bus reconnects on its own, keeps its subscriptions and publishes again."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from services.core import bus as bus_mod
from services.core import envelope, errors, subjects
from tests.support import infra
from tests.support.stack import Client, Stack


async def _force_server_close(bus: bus_mod.Bus) -> None:
    """Make nats-server close this connection (-ERR 'Maximum Control Line Exceeded')."""
    await bus.nc.publish("x" * 5000, b"")
    await infra.wait_until(lambda: _not_connected(bus), timeout_s=5, what="the server to close the connection")


async def _not_connected(bus: bus_mod.Bus) -> bool:
    return not bus.nc.is_connected


async def _connected(bus: bus_mod.Bus) -> bool:
    return bus.nc.is_connected


async def test_bus_reconnects_after_server_side_close(nats_url: str) -> None:
    bus = await bus_mod.Bus.connect(nats_url, name="reconnect-test")
    try:
        await bus.ensure_topology()
        got: list[bytes] = []

        async def on_probe(msg) -> None:  # type: ignore[no-untyped-def]
            got.append(msg.data)

        sub = await bus.nc.subscribe("evt.system.probe", cb=on_probe)
        await _force_server_close(bus)
        await infra.wait_until(lambda: _connected(bus), timeout_s=10, what="the bus to reconnect")
        env = envelope.make("system.probe", source="test", data={})
        ack = await bus.publish(subjects.system_event("probe"), env)
        assert ack.seq > 0
        await infra.wait_until(lambda: _nonempty(got), timeout_s=5, what="the subscription to get the probe")
        await sub.unsubscribe()
    finally:
        await bus.close()


async def _nonempty(items: list[bytes]) -> bool:
    return bool(items)


async def test_api_serves_again_after_server_side_close(hr: Stack, client: Client) -> None:
    assert hr.api.bus is not None
    await _force_server_close(hr.api.bus)
    status, body = await client.get("/healthz", token=None)
    assert status in (200, 503), (status, body)  # truthful: 503 while reconnecting, 200 once back
    await infra.wait_until(lambda: _connected(hr.api.bus), timeout_s=10, what="the API's bus to reconnect")
    status, body = await client.get("/healthz", token=None)
    assert status == 200 and body["status"] == "ok", body
    job_id = await client.submit("echo", "handle", {"after": "server close"})
    assert (await client.wait_job(job_id))["status"] == "succeeded"


async def test_a_wait_for_pubacks_ends_when_the_connection_drops(tmp_path: Path) -> None:
    """Acks that went with a dead server never come: publish_all must say so when the connection drops,
    not wait out its 30 s (a dispatcher batch in flight at a NATS restart held new work that long)."""
    server = infra.NatsServer(tmp_path / "nats")
    await server.start()
    bus = await bus_mod.Bus.connect(server.url, name="drop-test")
    try:
        await bus.ensure_topology()
        proc = server.embedded.proc
        assert proc is not None
        os.kill(proc.pid, signal.SIGSTOP)  # the messages go out; no PubAck can come back
        env = envelope.make("system.probe", source="test", data={})
        pending = asyncio.ensure_future(bus.publish_all([(subjects.system_event("probe"), env)]))
        await asyncio.sleep(0.3)
        assert not pending.done()
        await server.kill()  # SIGKILL works on a stopped process; the socket closes
        with pytest.raises(errors.TransientError, match="connection dropped"):
            await asyncio.wait_for(pending, timeout=20)
    finally:
        await bus.close()
        await server.stop()

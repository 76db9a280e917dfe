"""GET /healthz on the metrics port of `headrace dispatcher|runner|projector --metrics-port N`, each a real
OS process: 200 while it runs and its NATS (and, for the projector, Postgres) answers, naming the process
active or standby (both healthy); 503 naming what fails while a nats-server is paused (SIGSTOP: the socket
stays open, nothing answers) or killed, or while the projector's database refuses connections; 200 again
once it is back. What compose healthchecks and Kubernetes probes hit (compose.yaml, deploy/k8s).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from services.core import embedded
from tests.support import infra, stack
from tests.support.infra import wait_until
from tests.support.stack import ADMIN, ServiceProcess

#: how soon a paused NATS must show: the check's bound (health.CHECK_TIMEOUT_S, 2 s) plus slack for a busy box
NOTICED_WITHIN_S = 5.0


async def healthz(session: aiohttp.ClientSession, port: int, *, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with session.get(f"http://127.0.0.1:{port}/healthz", headers=headers) as resp:
            return resp.status, await resp.json()
    except (aiohttp.ClientConnectionError, TimeoutError):
        return 0, None  # not listening (yet)


async def all_answer(session: aiohttp.ClientSession, ports: list[int], status: int, *, timeout_s: float) -> list[Any]:
    """Poll until every port's /healthz answers `status`; their bodies."""

    async def reached() -> list[Any] | None:
        answers = await asyncio.gather(*(healthz(session, port) for port in ports))
        return [body for _, body in answers] if all(s == status for s, _ in answers) else None

    return await wait_until(reached, timeout_s=timeout_s, interval_s=0.1, what=f"/healthz {status} on {ports}")


def spawn(
    command: str, config: Any, tmp_path: Path, n: int, *, nats_url: str, database_url: str
) -> tuple[ServiceProcess, int]:
    port = embedded.free_port()
    proc = ServiceProcess(
        command,
        config_path=config.path,
        nats_url=nats_url,
        database_url=database_url,
        extra_args=["--metrics-port", str(port)],
        log_path=tmp_path / f"{command}-{n}.log",
    ).start()
    return proc, port


async def test_dispatchers_and_a_runner_answer_503_while_nats_is_paused_or_gone(
    tmp_path: Path, database_url: str
) -> None:
    nats = infra.NatsServer(tmp_path / "own-nats")
    await nats.start()
    config = stack.write_config(tmp_path / "c.yaml", stack.config_doc(), nats_url=nats.url, database_url=database_url)
    procs = [
        spawn(command, config, tmp_path, n, nats_url=nats.url, database_url=database_url)
        for n, command in enumerate(("dispatcher", "dispatcher", "runner"))
    ]
    ports = [port for _, port in procs]
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
    try:
        bodies = await all_answer(session, ports, 200, timeout_s=30)
        for body, command in zip(bodies, ("dispatcher", "dispatcher", "runner"), strict=True):
            assert body["status"] == "ok" and body["service"] == command, body
            assert body["components"]["nats"] == {"ok": True, "state": "connected"}
            assert body["components"]["service"] == {"ok": True}
            assert "postgres" not in body["components"] and "failing" not in body
        # one dispatcher leads, the other stands by, and both are healthy; the runner has no role
        assert sorted(b["leadership"]["state"] for b in bodies[:2]) == ["active", "standby"]
        assert {b["leadership"]["role"] for b in bodies[:2]} == {"dispatcher"}
        assert "source" not in bodies[0]["leadership"]  # instance names only for an admin
        assert "leadership" not in bodies[2]
        status, admin_view = await healthz(session, ports[0], token=ADMIN)
        assert status == 200 and admin_view["leadership"]["source"].startswith("dispatcher/")

        # killed: the connections drop at once; restarted on the same port and store: they come back
        await nats.kill()
        bodies = await all_answer(session, ports, 503, timeout_s=5)
        assert all(b["failing"] == ["nats"] for b in bodies), bodies
        await nats.restart()
        bodies = await all_answer(session, ports, 200, timeout_s=10)
        assert all(b["components"]["nats"]["state"] == "connected" for b in bodies)

        proc = nats.embedded.proc
        assert proc is not None
        os.kill(proc.pid, signal.SIGSTOP)  # connections stay open, nothing answers
        paused = time.monotonic()
        try:
            bodies = await all_answer(session, ports, 503, timeout_s=10)
            noticed = time.monotonic() - paused
            status, admin_view = await healthz(session, ports[2], token=ADMIN)
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        assert noticed < NOTICED_WITHIN_S, noticed
        for body in bodies:
            assert body["status"] == "error" and body["failing"] == ["nats"], body
            assert "error" not in body["components"]["nats"]  # error texts only for an admin
        assert status == 503 and "NATS did not answer" in admin_view["components"]["nats"]["error"], admin_view
        await all_answer(session, ports, 200, timeout_s=10)

        # the pause may have cost the active its lease: one of the two leads again (and both stay healthy)
        async def one_leads() -> bool:
            answers = await asyncio.gather(*(healthz(session, port) for port in ports[:2]))
            states = sorted(body["leadership"]["state"] for status, body in answers if status == 200)
            return states == ["active", "standby"]

        await wait_until(one_leads, timeout_s=10, interval_s=0.1, what="one active dispatcher")

    finally:
        await session.close()
        codes = list(await asyncio.gather(*(p.stop() for p, _ in procs)))
        await nats.stop()
    assert codes == [0, 0, 0], [p.log_path.read_text()[-2000:] for p, _ in procs if p.log_path]


async def test_the_projector_answers_503_while_its_database_refuses_connections(
    tmp_path: Path, nats_url: str, database_url: str, postgres: infra.Postgres
) -> None:
    config = stack.write_config(tmp_path / "c.yaml", stack.config_doc(), nats_url=nats_url, database_url=database_url)
    proc, port = spawn("projector", config, tmp_path, 0, nats_url=nats_url, database_url=database_url)
    name = database_url.rpartition("/")[2]
    admin = await asyncpg.connect(postgres.admin_url)
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
    try:
        (body,) = await all_answer(session, [port], 200, timeout_s=30)
        assert body["components"]["postgres"] == {"ok": True} and body["components"]["nats"]["ok"] is True
        assert body["leadership"] == {"role": "projector", "state": "active"}
        # the database refuses new sessions and the projector's are ended: its pool cannot answer
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
        (body,) = await all_answer(session, [port], 503, timeout_s=10)
        assert body["failing"] == ["postgres"] and body["components"]["nats"]["ok"] is True, body
        status, admin_view = await healthz(session, port, token=ADMIN)
        assert status == 503 and admin_view["components"]["postgres"]["error"], admin_view
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        (body,) = await all_answer(session, [port], 200, timeout_s=10)
        assert body["components"]["postgres"] == {"ok": True}
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
        await session.close()
        code = await proc.stop()
    assert code == 0, (tmp_path / "projector-0.log").read_text()[-2000:]

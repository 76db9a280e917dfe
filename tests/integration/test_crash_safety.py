"""Crash safety, tested by killing things: nothing is lost, nothing silently runs twice.

- SIGKILL a runner mid-plugin → the attempt is recorded as lost, the job is retried and succeeds once;
- SIGKILL the dispatcher and the projector mid-load → every job final, one success each, rows == rebuild;
- restart NATS (same store) mid-load → the same.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from services.api.service import Api
from services.core import bus as bus_mod
from services.core import subjects
from services.dispatcher.service import Dispatcher
from services.projector import rebuild
from services.projector.service import Projector
from services.runner.service import Runner
from tests.integration.test_projector import snapshot
from tests.support import infra, stack

FAST = {"retry": {"max_attempts": 4, "backoff_base": "0.2s"}}


async def success_counts(bus: bus_mod.Bus) -> dict[str, int]:
    """job_id → number of job.succeeded events stored for it."""
    info = await bus.js.stream_info(subjects.EVENTS, subjects_filter="evt.job.*.succeeded")
    return {subject.split(".")[2]: n for subject, n in (info.state.subjects or {}).items()}


async def submit_many(client: stack.Client, n: int, *, plugin: str = "echo_py", concurrency: int = 32) -> list[str]:
    """Submit n jobs the way a careful client does: retry on 503 with the same Idempotency-Key."""
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> str:
        key = {"Idempotency-Key": f"load-{uuid.uuid4()}"}
        async with gate:
            deadline = asyncio.get_running_loop().time() + 90  # a restarting NATS may take a while on a busy box
            while asyncio.get_running_loop().time() < deadline:
                try:
                    status, body = await client.post(
                        f"/plugin/{plugin}/poll", json={"payload": {"message": str(i)}}, headers=key
                    )
                except OSError:
                    status, body = 0, None
                if status == 202:
                    return body["job_id"]
                assert status in (0, 409, 503), (status, body)
                await asyncio.sleep(0.1)
        raise AssertionError("submit never accepted")

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def all_succeeded(database_url: str, job_ids: list[str]) -> bool:
    conn = await asyncpg.connect(database_url, server_settings={"search_path": "headrace"})
    try:
        done = await conn.fetchval("SELECT count(*) FROM jobs WHERE job_id = ANY($1) AND status = 'succeeded'", job_ids)
    finally:
        await conn.close()
    return done == len(job_ids)


async def _marker_lines(path: Path) -> bool:
    return path.exists() and bool(path.read_text().strip())


async def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as f:  # a zombie awaiting its (dead) parent's reaper counts as gone
        return f.read().split()[2] == "Z"


async def test_sigkilled_runner_mid_plugin_is_retried_and_succeeds_once(
    make_config: Any, nats_url: str, database_url: str, tmp_path: Path
) -> None:
    config = make_config(
        plugins={"napper": FAST}, service={"log_level": "warning", "max_workers": 2, "work_lease": "3s"}
    )
    projector, dispatcher, api = Projector(config), Dispatcher(config), Api(config, port=0)
    for service in (projector, dispatcher, api):
        await service.start()
    runner = stack.ServiceProcess(
        "runner",
        config_path=config.path,
        nats_url=nats_url,
        database_url=database_url,
        log_path=tmp_path / "runner.log",
    ).start()
    client = stack.Client(api.url)
    marker = tmp_path / "starts"
    try:
        job_id = await client.submit("napper", "poll", {"seconds": 4, "marker": str(marker)})
        await client.wait_job(job_id, {"running"}, timeout_s=30)
        await infra.wait_until(lambda: _marker_lines(marker), timeout_s=10, what="the plugin started")
        orphan_pid = int(marker.read_text().split()[1])
        runner.kill()
        # the plugin dies with its runner: no orphan finishes an attempt that is about to be retried
        await infra.wait_until(lambda: _gone(orphan_pid), timeout_s=5, what="the plugin to die with its runner")
        runner = stack.ServiceProcess(
            "runner",
            config_path=config.path,
            nats_url=nats_url,
            database_url=database_url,
            log_path=tmp_path / "runner2.log",
        ).start()
        done = await client.wait_job(job_id, timeout_s=60)
        assert done["status"] == "succeeded" and done["attempt"] == 2
        assert api.bus is not None
        assert (await success_counts(api.bus)).get(job_id) == 1
        await projector.wait_for(await api.bus.stream_last_seq(subjects.EVENTS))
        assert api.pool is not None
        rows = await api.pool.fetch(
            "SELECT attempt, status, last_error FROM job_logs WHERE job_id = $1 ORDER BY attempt", job_id
        )
        assert [(r["attempt"], r["status"]) for r in rows] == [(1, "failed"), (2, "succeeded")]
        assert "lost" in rows[0]["last_error"]
        assert len(marker.read_text().splitlines()) == 2  # ran once per attempt, never more
    finally:
        await client.close()
        runner.kill()
        for service in (api, dispatcher, projector):
            await service.stop()


async def test_sigkilled_dispatcher_and_projector_mid_load(
    make_config: Any, nats_url: str, database_url: str, tmp_path: Path
) -> None:
    config = make_config(plugins={"echo_py": {"parallelism": 4}})
    runner, api = Runner(config), Api(config, port=0)
    for service in (runner, api):
        await service.start()

    def spawn(name: str, n: int) -> stack.ServiceProcess:
        return stack.ServiceProcess(
            name,
            config_path=config.path,
            nats_url=nats_url,
            database_url=database_url,
            log_path=tmp_path / f"{name}{n}.log",
        ).start()

    dispatcher, projector = spawn("dispatcher", 0), spawn("projector", 0)
    client = stack.Client(api.url)
    try:
        load = asyncio.create_task(submit_many(client, 2000))
        for n in (1, 2):
            await asyncio.sleep(1.5)
            dispatcher.kill()
            projector.kill()
            await asyncio.sleep(0.3)
            dispatcher, projector = spawn("dispatcher", n), spawn("projector", n)
        job_ids = await load
        assert len(set(job_ids)) == 2000
        await infra.wait_until(
            lambda: all_succeeded(database_url, job_ids), timeout_s=240, interval_s=0.5, what="all 2000 jobs succeeded"
        )
        assert api.bus is not None
        counts = await success_counts(api.bus)
        assert all(counts.get(j) == 1 for j in job_ids), "a job succeeded twice or never"

        async def caught_up() -> bool:
            _, _, seq = await snapshot(database_url)
            return seq == await api.bus.stream_last_seq(subjects.EVENTS)  # type: ignore[union-attr]

        await infra.wait_until(caught_up, timeout_s=60, what="projector caught up")
        live = await snapshot(database_url)
        await projector.stop()
        await rebuild.rebuild(api.bus, database_url)
        assert await snapshot(database_url) == live
    finally:
        await client.close()
        dispatcher.kill()
        projector.kill()
        for service in (api, runner):
            await service.stop()


async def test_nats_restart_mid_load(tmp_path: Path, database_url: str) -> None:
    nats = infra.NatsServer(tmp_path / "nats")
    await nats.start()
    config = stack.write_config(
        tmp_path / "c.yaml",
        stack.config_doc(plugins={"echo_py": {"parallelism": 4}}),
        nats_url=nats.url,
        database_url=database_url,
    )
    s = await stack.Stack(config).start()
    assert s.client is not None
    try:
        load = asyncio.create_task(submit_many(s.client, 600))
        await asyncio.sleep(1.0)
        await nats.restart()
        job_ids = await load
        await infra.wait_until(
            lambda: all_succeeded(database_url, job_ids),
            timeout_s=180,
            interval_s=0.5,
            what="all jobs succeeded after the NATS restart",
        )
        assert s.api.bus is not None
        counts = await success_counts(s.api.bus)
        assert all(counts.get(j) == 1 for j in job_ids)
        await s.projector.wait_for(await s.api.bus.stream_last_seq(subjects.EVENTS), timeout_s=60)
        live = await snapshot(database_url)
        await rebuild.rebuild(s.api.bus, database_url)
        assert await snapshot(database_url) == live
    finally:
        await s.stop()
        await nats.stop()


async def test_lost_attempts_never_open_the_circuit_breaker(
    make_config: Any, nats_url: str, database_url: str, tmp_path: Path
) -> None:
    """Runners SIGKILLed mid-plugin lose attempts; that is not the plugin failing: no later job is skipped."""
    config = make_config(
        plugins={
            "napper": {
                "retry": {"max_attempts": 6, "backoff_base": "0.2s"},
                "circuit_breaker": {"threshold": 2, "reset_after": "1h"},
            }
        },
        service={"log_level": "warning", "max_workers": 2, "work_lease": "2s"},
    )
    projector, dispatcher, api = Projector(config), Dispatcher(config), Api(config, port=0)
    for service in (projector, dispatcher, api):
        await service.start()

    def spawn(n: int) -> stack.ServiceProcess:
        return stack.ServiceProcess(
            "runner",
            config_path=config.path,
            nats_url=nats_url,
            database_url=database_url,
            log_path=tmp_path / f"runner{n}.log",
        ).start()

    runner = spawn(0)
    client = stack.Client(api.url)
    marker = tmp_path / "starts"
    try:
        job_id = await client.submit("napper", "poll", {"seconds": 30, "marker": str(marker)})
        assert dispatcher.bus is not None
        bus = dispatcher.bus

        async def started(n: int) -> bool:  # the plugin runs and its attempt is recorded as started
            events = await bus.history(subjects.EVENTS, subjects.job_event(job_id, "started"))
            return await _lines(marker, n) and len(events) >= n

        for lost in range(1, 4):  # three attempts lost in a row: past the threshold of 2
            await infra.wait_until(lambda n=lost: started(n), timeout_s=30, what=f"attempt {lost} started")
            runner.kill()
            runner = spawn(lost)
        await infra.wait_until(lambda: _lines(marker, 4), timeout_s=30, what="attempt 4 started")
        job = await client.wait_job(job_id, {"running"}, timeout_s=10)
        assert job["attempt"] == 4
        failed = await bus.history(subjects.EVENTS, subjects.job_event(job_id, "failed"))
        assert [env.data.get("lost") for _, env in failed] == [True, True, True]
        # later jobs of the same command run: the breaker saw no plugin failure
        later = [await client.submit("napper", "poll", {"seconds": 0}) for _ in range(2)]
        for other in later:
            done = await client.wait_job(other, timeout_s=30)
            assert done["status"] == "succeeded", done
    finally:
        await client.close()
        runner.kill()
        for service in (api, dispatcher, projector):
            await service.stop()


async def _lines(path: Path, n: int) -> bool:
    return path.exists() and len(path.read_text().splitlines()) >= n

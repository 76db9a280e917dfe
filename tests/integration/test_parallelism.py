"""`parallelism` caps concurrent attempts of a plugin across every runner process, and a
`concurrency_safe: false` manifest means one at a time whatever the config says.

The projector, dispatcher and API run in-process; the work is done by two `headrace runner`
OS processes sharing the plugin's durable consumer. The plugins record when each run starts
and ends (CLOCK_MONOTONIC, comparable across processes) and the intervals are checked.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import nats.js.errors
import pytest

from services.api.service import Api
from services.core import config as config_mod
from services.core import lifecycle, subjects
from services.dispatcher.service import Dispatcher
from services.projector.service import Projector
from tests.support.infra import wait_until
from tests.support.stack import Client, ServiceProcess

PARALLEL_JOBS = 8
SERIAL_JOBS = 4


class Cluster:
    """API, dispatcher and projector in this process; runners as separate processes."""

    def __init__(self, config: config_mod.Config, runners: list[ServiceProcess]) -> None:
        self.config = config
        self.api = Api(config, port=0)
        self.services: list[lifecycle.Service] = [Projector(config), Dispatcher(config), self.api]
        self.runners = runners
        self.client: Client | None = None

    async def start(self) -> Cluster:
        for runner in self.runners:
            runner.start()
        for service in self.services:
            await service.start()
        self.client = Client(self.api.url)
        return self

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()
        await asyncio.gather(*(runner.stop() for runner in self.runners))
        for service in reversed(self.services):
            await service.stop()

    async def wait_runners_polling(self, plugin: str) -> None:
        """Both runner processes have an open pull request on the plugin's mailbox."""
        assert self.api.bus is not None
        js = self.api.bus.js

        async def polling() -> bool:
            try:
                info = await js.consumer_info(subjects.WORK, subjects.runner_consumer(plugin))
            except nats.js.errors.NotFoundError:
                return False
            return (info.num_waiting or 0) >= len(self.runners)

        await wait_until(polling, timeout_s=20, what=f"{len(self.runners)} runners polling {plugin}")


@pytest.fixture
async def cluster(
    make_config: Callable[..., Any], nats_url: str, database_url: str, tmp_path: Path
) -> AsyncIterator[Cluster]:
    config = make_config(
        plugins={
            "slow_recorder": {"parallelism": 2, "config": {"record_file": str(tmp_path / "parallel.log")}},
            # the manifest says concurrency_safe: false; the config asks for 2 anyway
            "serial_recorder": {"parallelism": 2, "config": {"record_file": str(tmp_path / "serial.log")}},
        }
    )
    assert config.path is not None
    runners = [
        ServiceProcess(
            "runner",
            config_path=config.path,
            nats_url=nats_url,
            database_url=database_url,
            extra_args=["--plugin", "slow_recorder", "--plugin", "serial_recorder"],
            log_path=tmp_path / f"runner-{i}.log",
        )
        for i in range(2)
    ]
    c = Cluster(config, runners)
    try:
        await c.start()
        yield c
    finally:
        await c.stop()


def intervals(path: Path) -> dict[int, tuple[int, int]]:
    """pid → (start_ns, end_ns) from the recorder's log."""
    starts: dict[int, int] = {}
    ends: dict[int, int] = {}
    for line in path.read_text().splitlines():
        what, ns, pid = line.split()
        (starts if what == "start" else ends)[int(pid)] = int(ns)
    assert starts.keys() == ends.keys(), "a run started without ending (or the other way round)"
    return {pid: (starts[pid], ends[pid]) for pid in starts}


def max_overlap(spans: dict[int, tuple[int, int]]) -> int:
    """The most runs in progress at any instant (an end at the same instant as a start frees first)."""
    edges = sorted([(s, 1) for s, _ in spans.values()] + [(e, -1) for _, e in spans.values()])
    running = peak = 0
    for _, delta in edges:
        running += delta
        peak = max(peak, running)
    return peak


async def run_all(c: Cluster, plugin: str, count: int) -> list[dict[str, Any]]:
    assert c.client is not None
    await c.wait_runners_polling(plugin)
    job_ids = [await c.client.submit(plugin, "poll", {"n": i}) for i in range(count)]
    return [await c.client.wait_job(job_id, timeout_s=30) for job_id in job_ids]


async def runners_used(c: Cluster, jobs: list[dict[str, Any]]) -> set[str]:
    assert c.api.bus is not None
    used: set[str] = set()
    for job in jobs:
        for _, env in await c.api.bus.history(subjects.EVENTS, subjects.job_event(job["job_id"], "started")):
            used.add(env.source)
    return used


async def test_parallelism_caps_concurrent_attempts_across_runner_processes(cluster: Cluster, tmp_path: Path) -> None:
    jobs = await run_all(cluster, "slow_recorder", PARALLEL_JOBS)
    assert [j["status"] for j in jobs] == ["succeeded"] * PARALLEL_JOBS, jobs
    spans = intervals(tmp_path / "parallel.log")
    assert len(spans) == PARALLEL_JOBS
    assert max_overlap(spans) == 2  # never more than the cap, and the cap is actually used
    assert all(j["attempt"] == 1 for j in jobs)
    # both processes took work: the cap is the shared consumer's, not one runner's semaphore
    assert len(await runners_used(cluster, jobs)) == 2


async def test_concurrency_unsafe_plugin_runs_one_at_a_time(cluster: Cluster, tmp_path: Path) -> None:
    jobs = await run_all(cluster, "serial_recorder", SERIAL_JOBS)
    assert [j["status"] for j in jobs] == ["succeeded"] * SERIAL_JOBS, jobs
    spans = intervals(tmp_path / "serial.log")
    assert len(spans) == SERIAL_JOBS
    assert max_overlap(spans) == 1
    assert all(j["attempt"] == 1 for j in jobs)

"""Chaos: nats-server and the four services as separate OS processes under a mixed HTTP load
(in-process echo_py, subprocess echo, the slow slow_recorder, a two-step pipeline), each process
SIGKILLed in turn while work is in flight (runner, dispatcher, projector, nats-server, api) and
started again. Afterwards, counted from the EVENTS stream with a raw NATS client: nothing lost,
nothing doubled (one success per job, plugin runs never more than attempts), no job skipped by
a circuit that lost attempts opened, and the read models equal a fresh `headrace rebuild`.

About two minutes on two busy cores. CHAOS_SEED=<n> replays a mix (the timing differs);
every bound is generous, and a failure names the seed, the kills and the logs' directory.
Run alone with `pytest tests/chaos` (or `-m chaos`); CHAOS_KEEP_DIR=<dir> keeps a failed run's
logs, recorder files and NATS store there.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import os
import random
import shutil
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.chaos import audit
from tests.chaos.load import HELD_PIPELINE, PIPELINE, PIPELINE_KINDS, Load, Submission
from tests.chaos.watch import Watcher
from tests.support import eventlog, readmodels, stack
from tests.support.cluster import NATS, ProcessCluster
from tests.support.infra import wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

KILL_ORDER = ("runner", "dispatcher", "projector", NATS, "api")
RETRY = {"backoff_base": "0.2s"}  # the default attempts (4) and breaker (3 failures, 30m); only faster backoff


def chaos_config() -> dict[str, Any]:
    return stack.config_doc(
        plugins={
            "echo_py": {"parallelism": 4, "retry": RETRY},
            "echo": {"parallelism": 2, "retry": RETRY},
            "slow_recorder": {"parallelism": 4, "retry": RETRY},
            "napper": {"parallelism": 2, "retry": RETRY},  # the held pipeline's step, nothing else
        },
        pipelines=[
            {
                "name": PIPELINE,
                "steps": [{"id": "first", "uses": "echo"}, {"id": "second", "uses": "slow_recorder.poll"}],
            },
            {
                "name": HELD_PIPELINE,
                "execution_mode": "synchronous",
                "timeout": "10s",
                "steps": [{"id": "first", "uses": "echo_py"}, {"id": "second", "uses": "napper.poll"}],
            },
        ],
        service={"name": "headrace-chaos", "log_level": "warning", "max_workers": 8, "work_lease": "3s"},
    )


@dataclasses.dataclass
class Kill:
    target: str
    at_s: float
    pid: int | None
    in_flight: int
    requests_in_flight: int
    down_s: float
    back_s: float = -1.0

    def __str__(self) -> str:
        return (
            f"{self.target}(pid {self.pid}) at {self.at_s:.1f}s with {self.in_flight} attempts and "
            f"{self.requests_in_flight} HTTP requests in flight, "
            f"down {self.down_s:.1f}s, back at work after {self.back_s:.1f}s"
        )


async def until(check: Callable[[], bool | Awaitable[bool]], what: str, timeout_s: float) -> None:
    async def predicate() -> bool:
        value = check()
        return bool(await value) if isinstance(value, Awaitable) else bool(value)

    await wait_until(predicate, timeout_s=timeout_s, interval_s=0.1, what=what)


class Chaos:
    """Kills one process while work is in flight, restarts it, waits until it is back at work."""

    def __init__(self, cluster: ProcessCluster, watcher: Watcher, load: Load, rng: random.Random) -> None:
        self.cluster = cluster
        self.watcher = watcher
        self.load = load
        self.rng = rng
        self.t0 = time.monotonic()
        self.kills: list[Kill] = []

    async def in_flight(self, target: str) -> int:
        """Until work is in flight for `target`; how much."""
        if target == "api":  # one answer certainly lost: a synchronous run whose job is running
            await self.hold()
        if target in (NATS, "api"):  # HTTP requests mid-flight: some answers get lost, some half-done
            self.load.burst = True
            await until(lambda: self.load.requests_in_flight >= 2, "2 HTTP requests in flight", 20)
        # a runner dies with several slow attempts running (enough to open a breaker that counts lost attempts)
        plugin, need = ("slow_recorder", 3) if target == "runner" else (None, 1)
        try:
            await until(lambda: self.watcher.in_flight(plugin) >= need, f"{need} attempts in flight", 20)
        except AssertionError:
            await until(lambda: self.watcher.in_flight() >= 1, "any attempt in flight (is the load stalled?)", 20)
        return self.watcher.in_flight(plugin)

    async def hold(self) -> None:
        """Until a held (synchronous) pipeline request is open while its job runs. A run queued behind a
        backlog for longer than the pipeline's timeout is answered 202 before the kill: then hold another."""
        for _ in range(3):
            held = self.load.hold(seconds=3.0)
            assert held.record_file is not None
            await until(partial(_started_or_answered, held), "the held pipeline's napper step", 60)
            if held.job_id is None:
                return
        raise AssertionError("three held pipeline runs were answered before their napper step started")

    async def kill_and_restart(self, target: str) -> Kill:
        in_flight = await self.in_flight(target)
        kill = Kill(
            target,
            time.monotonic() - self.t0,
            self.cluster.pid(target),
            in_flight,
            requests_in_flight=self.load.requests_in_flight,
            down_s=self.rng.uniform(0.3, 1.5),
        )
        self.kills.append(kill)
        await self.cluster.kill(target)
        await asyncio.sleep(kill.down_s)
        self.load.burst = False
        await self.cluster.restart(target)
        restarted = time.monotonic()
        await self.back_at_work(target)
        kill.back_s = time.monotonic() - restarted
        return kill

    async def back_at_work(self, target: str) -> None:
        """Until the restarted process has demonstrably done its job again."""
        w = self.watcher
        if target in ("runner", "dispatcher"):  # it published (job.started / job.queued) under its new pid
            source = self.cluster.procs[target].source
            await until(lambda: source in w.sources, f"{source} to publish", 45)
        elif target == "projector":  # it projected everything stored when it came back
            last = int((await w.nc.jetstream().stream_info("EVENTS")).state.last_seq)
            db = self.cluster.database_url
            await until(lambda: _at_least(readmodels.checkpoint(db), last), f"the projector to reach {last}", 45)
        elif target == NATS:  # a job submitted after the restart is queued and some attempt started
            restarted = time.monotonic()
            started = w.counts["job.started"]

            def fresh_job_queued() -> bool:
                return any(s.sent_at > restarted and s.job_id in w.queued for s in reversed(self.load.submissions))

            await until(fresh_job_queued, "a job submitted after the NATS restart to be queued", 60)
            await until(lambda: w.counts["job.started"] > started, "an attempt to start after the NATS restart", 30)
        else:  # the API answers and accepts work again
            await stack.wait_healthy(self.cluster.url, timeout_s=45)
            accepted = len(self.load.accepted())
            await until(lambda: len(self.load.accepted()) > accepted, "a 202 from the restarted API", 45)


def _started_or_answered(held: Submission) -> bool:
    assert held.record_file is not None
    return held.record_file.exists() or held.job_id is not None


async def _at_least(value: Awaitable[int], bound: int) -> bool:
    return await value >= bound


@pytest.mark.timeout(420)
async def test_chaos_kill_every_process_under_load(
    database_url: str, tmp_path: Path, chaos_summary: Callable[[str], None]
) -> None:
    seed = int(os.environ.get("CHAOS_SEED") or time.time_ns() % 1_000_000)
    started = time.monotonic()
    phases: dict[str, float] = {}
    runs = tmp_path / "runs"
    runs.mkdir()
    cluster = ProcessCluster(tmp_path, chaos_config(), database_url=database_url)
    watcher: Watcher | None = None
    stop = asyncio.Event()
    load_task: asyncio.Task[None] | None = None
    chaos: Chaos | None = None
    problems: list[str] = []
    failed = False
    try:
        await cluster.start()
        watcher = await Watcher(cluster.nats_url).start()
        load = Load(cluster.url, token=stack.ADMIN, seed=seed, runs_dir=runs)
        load_task = asyncio.create_task(load.run(stop))
        phases["start"] = time.monotonic() - started
        rng = random.Random(seed)
        chaos = Chaos(cluster, watcher, load, rng)
        await asyncio.sleep(3)
        for target in KILL_ORDER:
            await chaos.kill_and_restart(target)
            await asyncio.sleep(rng.uniform(2.0, 4.0))
        stop.set()
        await asyncio.wait_for(load_task, timeout=150)
        phases["load"] = time.monotonic() - started - phases["start"]

        accepted = load.accepted()
        held = [s for s in load.submissions if s.kind == "held"]
        if not any(s.unknown for s in held):  # the premise: a held answer was lost
            problems.append(
                "the held request was answered across the API kill: "
                + ", ".join(
                    f"{s} (sent {s.sent_at - chaos.t0:.2f}s, answered {s.answered_at - chaos.t0:.2f}s)" for s in held
                )
            )
        roots = {s.job_id for s in accepted if s.kind in PIPELINE_KINDS and s.job_id}
        wanted = {s.job_id for s in accepted if s.job_id}

        async def settled() -> bool:
            seen, done = await eventlog.job_progress(cluster.nats_url, roots=roots)
            return wanted <= done and seen <= done

        try:
            await until(settled, "every job to reach a final status", 120)
        except AssertionError as exc:
            problems.append(str(exc))  # the audit below names them

        async def caught_up() -> bool:
            last = int((await watcher.nc.jetstream().stream_info("EVENTS")).state.last_seq)
            return await readmodels.checkpoint(database_url) == last

        await until(caught_up, "the projector to catch up", 60)
        phases["drain"] = time.monotonic() - started - phases["start"] - phases["load"]

        live = await readmodels.snapshot(database_url)
        events = await eventlog.read_all(cluster.nats_url)
        jobs = eventlog.fold(events)
        findings = audit.audit(
            load.submissions, jobs, await readmodels.job_statuses(database_url), t0_ns=int(chaos.t0 * 1e9)
        )
        problems += findings.violations()
        if watcher.breaker_opens:
            problems.append(
                f"circuit opened {len(watcher.breaker_opens)}x (nothing fails by itself in this run): "
                + ", ".join(f"{key} after {n} failures" for _, key, n in watcher.breaker_opens)
            )

        codes = {"projector": await cluster.procs["projector"].stop()}
        rebuild = cluster.spawn("rebuild")
        codes["rebuild"] = await rebuild.wait(90)
        rebuilt = await readmodels.snapshot(database_url)
        if rebuilt != live:
            problems.append(
                "read models differ from a fresh rebuild: " + " | ".join(readmodels.differences(live, rebuilt))
            )
        codes.update(await cluster.stop())
        if any(code != 0 for code in codes.values()):
            problems.append(f"exit codes after SIGTERM: {codes}")
        phases["check"] = time.monotonic() - started - sum(phases.values())

        kinds = collections.Counter(s.kind for s in accepted)
        statuses = collections.Counter(st for c in findings.statuses.values() for st in c.elements())
        summary = (
            f"chaos seed={seed}: {len(accepted)} jobs ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))}), "
            f"{len(jobs)} in the log, {len(events)} events, {len(chaos.kills)} kills, "
            f"lost={len(findings.lost)} doubled={len(findings.doubled)} circuit-skipped={len(findings.circuit)} "
            f"other-failed={len(findings.failed)} | statuses {dict(statuses)} | "
            f"{findings.lost_attempts} lost attempts, {findings.recorded_runs} recorded runs, "
            f"{sum(s.unknown for s in load.submissions)} unanswered requests, "
            f"{sum(s.replayed for s in accepted)} replayed 202s, held answer lost "
            f"{sum(s.unknown for s in held)}x then {sum(s.in_progress for s in held)}x 409 in progress | "
            "back at work after: "
            + ", ".join(f"{k.target} {k.back_s:.1f}s" for k in chaos.kills)
            + f" | {time.monotonic() - started:.0f}s ("
            + ", ".join(f"{k} {v:.0f}s" for k, v in phases.items())
            + ")"
        )
        chaos_summary(summary)
        print(summary, *map(str, chaos.kills), sep="\n  ")
        assert not problems, "\n".join([summary, *problems, "kills:", *map(str, chaos.kills), f"logs: {tmp_path}"])
    except BaseException:
        failed = True
        if chaos is not None:
            print(f"chaos seed={seed} kills:", *map(str, chaos.kills), f"logs: {tmp_path}", sep="\n  ")
        raise
    finally:
        stop.set()
        if load_task is not None and not load_task.done():
            load_task.cancel()
        if watcher is not None:
            await watcher.stop()
        await cluster.kill_all()
        keep = os.environ.get("CHAOS_KEEP_DIR")
        if failed and keep:  # logs, recorder files and the NATS store, beyond pytest's last three tmp dirs
            shutil.copytree(tmp_path, Path(keep) / f"seed-{seed}", dirs_exist_ok=True)

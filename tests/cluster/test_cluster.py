"""The cluster topology under load and losses: three clustered nats-servers (streams at replicas
3), two APIs, two dispatchers, two projectors and two runners, all on deploy/config.yaml
(tests/cluster/topology.py). While 10,000 jobs (in-process `echo_py`, subprocess `echo`, the
two-step `ingest` pipeline) go in through both APIs, SIGKILL in turn: the NATS node leading the
EVENTS stream (then start it again), the dispatcher that holds the lease, a runner, an API and the
projector that holds the lock (each started again).

Afterwards, counted from the EVENTS stream with a raw NATS client: every 202'd job is final and
succeeded, no job succeeded twice or started after it succeeded, each idempotency key made one job,
the heartbeat schedule fired once per due time with no gap, the read models equal a fresh
`headrace rebuild`, and every process stops cleanly on SIGTERM.

Run with `make test-cluster` (HEADRACE_TEST_CLUSTER=1 pytest tests/cluster). CLUSTER_JOBS=<n>
changes the job count, CLUSTER_SEED=<n> replays a mix; a failure names the seed, the kills and the
logs' directory.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from services.core import envelope
from tests.cluster import topology
from tests.cluster.fleet import Fleet
from tests.cluster.load import PIPELINE_KINDS, ClusterLoad
from tests.support import eventlog, readmodels, stack
from tests.support.infra import wait_until

JOBS = int(os.environ.get("CLUSTER_JOBS") or 10_000)
#: (service, when: the share of the jobs accepted before the kill)
KILLS = (("nats", 0.12), ("dispatcher", 0.3), ("runner", 0.48), ("api", 0.64), ("projector", 0.8))
SCHEDULE_SUBJECT = "evt.schedule.echo_py.heartbeat"


@dataclasses.dataclass
class Kill:
    target: str
    at_s: float
    accepted: int
    #: seconds until the role worked again (a standby took the lease, the node was current, …)
    back_s: float = -1.0
    detail: str = ""

    def __str__(self) -> str:
        return (
            f"{self.target} {self.detail} at {self.at_s:.1f}s ({self.accepted} accepted), back after {self.back_s:.2f}s"
        )


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float) -> None:
    await wait_until(check, timeout_s=timeout_s, interval_s=0.1, what=what)


class Killer:
    """Kills one process of each kind in turn as the load passes each share of the jobs."""

    def __init__(self, fleet: Fleet, load: ClusterLoad) -> None:
        self.fleet = fleet
        self.load = load
        self.t0 = time.monotonic()
        self.kills: list[Kill] = []

    async def run(self) -> None:
        for target, share in KILLS:
            while len(self.load.accepted()) < share * self.load.total:
                if self.load.finished_at:
                    raise AssertionError(f"the load ended before the {target} kill")
                await asyncio.sleep(0.05)
            kill = Kill(target, time.monotonic() - self.t0, len(self.load.accepted()))
            self.kills.append(kill)
            started = time.monotonic()
            await getattr(self, f"_{target}")(kill)
            kill.back_s = time.monotonic() - started

    async def _nats(self, kill: Kill) -> None:
        name = await self.fleet.nats.stream_leader("EVENTS")
        kill.detail = f"node {name} (EVENTS leader)"
        await self.fleet.nats.kill(name)
        await asyncio.sleep(2.0)
        await self.fleet.nats.restart(name)
        node = self.fleet.nats.node(name)
        await until(lambda: self.fleet.nats.healthy(node), f"NATS node {name} to be current again", 60)

    async def _dispatcher(self, kill: Kill) -> None:
        await self._leader_role("dispatcher", kill)

    async def _projector(self, kill: Kill) -> None:
        await self._leader_role("projector", kill)

    async def _leader_role(self, role: str, kill: Kill) -> None:
        """SIGKILL the active one; back when the other holds the lease. The killed slot starts again (a standby)."""
        active = await self.fleet.active(role)
        killed = self.fleet.kill(role, active)
        kill.detail = f"{active} (active, pid {killed.pid})"
        other = await self.fleet.active(role, timeout_s=30)
        assert other != active
        self.fleet.restart(role, active)

    async def _runner(self, kill: Kill) -> None:
        killed = self.fleet.kill("runner", 0)
        kill.detail = f"0 (pid {killed.pid})"
        await asyncio.sleep(1.0)
        self.fleet.restart("runner", 0)

    async def _api(self, kill: Kill) -> None:
        killed = self.fleet.kill("api", 0)
        kill.detail = f"0 (pid {killed.pid}, {self.load.requests_in_flight} requests in flight)"
        await asyncio.sleep(1.0)
        self.fleet.restart("api", 0)
        await stack.wait_healthy(self.fleet.api_urls[0], timeout_s=60)


async def every_job_final(fleet: Fleet, roots: set[str], wanted: set[str]) -> None:
    """Until the event log has a final event for every job in it and every accepted one. The read models
    are polled first (cheap); the log, whose subject listing costs a second at this size, only then."""

    async def projected_final() -> bool:
        statuses = await readmodels.job_statuses(fleet.database_url)
        return wanted <= statuses.keys() and all(s in stack.FINAL or s == "failed" for s in statuses.values())

    async def settled() -> bool:
        seen, done = await eventlog.job_progress(fleet.nats.servers, roots=roots)
        return wanted <= done and seen <= done

    deadline = time.monotonic() + 180
    with contextlib.suppress(AssertionError):  # the log below decides; this only saves its polls
        await wait_until(projected_final, timeout_s=150, interval_s=0.5, what="projected")
    await wait_until(settled, timeout_s=max(deadline - time.monotonic(), 10), interval_s=1.0, what="every job final")


async def projected_everything(fleet: Fleet) -> int:
    last = 0

    async def caught_up() -> bool:
        nonlocal last
        assert fleet.nc is not None
        last = int((await fleet.nc.jetstream(timeout=5).stream_info("EVENTS")).state.last_seq)
        return await readmodels.checkpoint(fleet.database_url) == last

    await until(caught_up, "the projector to apply the whole log", 90)
    return last


def schedule_problems(events: list[eventlog.Event]) -> tuple[int, list[str]]:
    fired = [e for e in events if e.subject == SCHEDULE_SUBJECT and e.type == "schedule.fired"]
    per_due = collections.Counter(e.data["at"] for e in fired)
    problems = [f"heartbeat fired {n}x for {at}" for at, n in per_due.items() if n > 1]
    due = sorted(envelope.parse_time(at) for at in per_due)
    problems += [f"heartbeat gap {a} → {b}" for a, b in itertools.pairwise(due) if (b - a).total_seconds() != 1.0]
    problems += [
        f"heartbeat {e.type} at seq {e.seq}"
        for e in events
        if e.subject == SCHEDULE_SUBJECT and e.type == "schedule.skipped"
    ]
    if len(per_due) < 10:
        problems.append(f"only {len(per_due)} heartbeat fires")
    return len(per_due), problems


@pytest.mark.timeout(600)
async def test_cluster_survives_node_losses_under_load(database_url: str, tmp_path: Path) -> None:
    seed = int(os.environ.get("CLUSTER_SEED") or time.time_ns() % 1_000_000)
    t0 = time.monotonic()
    phases: dict[str, float] = {}

    def phase(name: str) -> None:
        phases[name] = time.monotonic() - t0 - sum(phases.values())

    fleet = Fleet(tmp_path, database_url=database_url)
    killer: Killer | None = None
    try:
        await fleet.start()
        phase("start")
        load = ClusterLoad(fleet.api_urls, token=fleet.token, seed=seed, total=JOBS)
        killer = Killer(fleet, load)
        load_task = asyncio.create_task(load.run())
        await killer.run()
        await load_task
        phase("load")

        problems = [f"{s.key} ({s.kind}): {s.error}" for s in load.submissions if s.error][:20]
        accepted = load.accepted()
        wanted = {s.job_id for s in accepted if s.job_id}
        roots = {s.job_id for s in accepted if s.kind in PIPELINE_KINDS and s.job_id}
        await every_job_final(fleet, roots, wanted)
        # no more schedule fires: what the log holds is then final, and the projection can catch up with it
        for proc in fleet.procs["dispatcher"]:
            assert await proc.stop() == 0, f"dispatcher exit (logs: {tmp_path})"
        await every_job_final(fleet, roots, wanted)
        last = await projected_everything(fleet)
        phase("drain")

        events = await eventlog.read_all(fleet.nats.servers)
        jobs = eventlog.fold(events)
        not_succeeded = [j for j in wanted if jobs[j].final != "succeeded"]
        problems += [f"{j}: {jobs[j].final} {jobs[j].error} {jobs[j].trail}" for j in not_succeeded[:10]]
        doubled = [j for j in jobs.values() if len(j.succeeded) > 1 or j.started_after_success]
        problems += [f"{j.job_id} succeeded {len(j.succeeded)}x: {j.trail}" for j in doubled[:10]]
        # one job per idempotency key, and it is the one the client was told
        by_key = collections.defaultdict(set)
        for job in jobs.values():
            message = job.payload.get("message")
            if job.is_root and isinstance(message, str) and message.startswith("cluster-"):
                by_key[message].add(job.job_id)
        told = {s.key: s.job_id for s in accepted}
        problems += [
            f"{key}: jobs {sorted(ids)}, told {told.get(key)}" for key, ids in by_key.items() if ids != {told.get(key)}
        ][:10]
        problems += [f"{key}: 202 but no job in the log" for key in told.keys() - by_key.keys()][:10]
        fires, late = schedule_problems(events)
        problems += late
        phase("audit")

        live = await readmodels.snapshot(database_url)
        statuses = collections.Counter((await readmodels.job_statuses(database_url)).values())
        for proc in fleet.procs["projector"]:
            assert await proc.stop() == 0, f"projector exit (logs: {tmp_path})"
        rebuild = fleet.spawn_extra("rebuild")
        assert await rebuild.wait(180) == 0, f"rebuild failed (logs: {tmp_path})"
        rebuilt = await readmodels.snapshot(database_url)
        problems += readmodels.differences(live, rebuilt)
        phase("rebuild")
        codes = await fleet.stop()
        if any(code != 0 for code in itertools.chain(*codes.values())):
            problems.append(f"exit codes after SIGTERM: {codes}")
        phase("stop")

        rate = len(accepted) / max(load.finished_at - load.started_at, 1e-9)
        summary = (
            f"cluster seed={seed}: {len(accepted)} jobs accepted ({dict(load.kinds())}) at {rate:.0f}/s, "
            f"{len(jobs)} jobs and {len(events)} events in the log (last seq {last}), statuses {dict(statuses)}, "
            f"{len(doubled)} doubled, {fires} heartbeat fires, "
            f"{sum(s.unknown for s in load.submissions)} unanswered requests, "
            f"{sum(s.replayed for s in accepted)} replayed 202s | "
            + "; ".join(map(str, killer.kills))
            + f" | {time.monotonic() - t0:.0f}s ("
            + ", ".join(f"{k} {v:.0f}s" for k, v in phases.items())
            + ")"
        )
        print(summary)
        assert len(killer.kills) == len(KILLS)
        # the topology's processes, one of each kind started again after its kill, and the rebuild
        assert fleet.incarnations == {**{s: n + 1 for s, n in topology.PROCESSES.items()}, "rebuild": 1}
        assert not problems, "\n".join([summary, *problems, f"logs: {tmp_path}"])
    except BaseException:
        if killer is not None:
            print(f"cluster seed={seed} kills:", *map(str, killer.kills), f"logs: {tmp_path}", sep="\n  ")
        raise
    finally:
        await fleet.kill_all()

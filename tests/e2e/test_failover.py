"""No single decider: two `headrace dispatcher` and two `headrace projector` processes on one nats-server and
one database, each SIGKILLed, paused or stopped in turn while work flows, everything counted from the EVENTS
stream (README: Leadership).

One fleet for the module (its start is the expensive part): each test leaves an active and a standby of
both roles behind. Takeover times are printed (pytest -s) and bounded.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
import signal
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import nats
import orjson
import pytest
from nats.js.kv import KeyValue

from services.core import envelope
from tests.support import eventlog, infra, stack
from tests.support.cluster import ProcessCluster

pytestmark = pytest.mark.timeout(240)

LEASE_TTL_S = 5.0  # the default lease (service.leader_lease)
PIPELINE = "two_step"
SCHEDULE = "tick"


def fleet_config() -> dict[str, Any]:
    return stack.config_doc(
        plugins={
            "echo_py": {
                "parallelism": 4,
                "retry": {"backoff_base": "0.2s"},
                # due every second all along: its fires are counted across every takeover of the module
                "schedules": [
                    {"id": SCHEDULE, "every": "1s", "command": "poll", "catch_up": True, "if_running": "queue"}
                ],
            },
            # its first attempts fail on purpose: no circuit may open on them
            "flaky": {"retry": {"max_attempts": 4, "backoff_base": "0.2s"}, "circuit_breaker": {"threshold": 1000}},
        },
        pipelines=[
            {"name": PIPELINE, "steps": [{"id": "first", "uses": "echo_py"}, {"id": "second", "uses": "echo_py"}]}
        ],
        service={"max_workers": 6},
    )


class Fleet:
    def __init__(self, cluster: ProcessCluster, root: Path, database_url: str) -> None:
        self.cluster = cluster
        self.root = root
        self.database_url = database_url
        self.dispatchers: list[stack.ServiceProcess] = []
        self.projectors: list[stack.ServiceProcess] = []
        self.client = stack.Client(cluster.url)
        self.nc: Any = None
        self.kv: KeyValue | None = None
        self.accepted: list[str] = []
        #: pipeline roots among them (their `job.failed` is final too)
        self.roots: set[str] = set()
        self.n = 0

    async def open(self) -> None:
        self.nc = await nats.connect(self.cluster.nats_url)
        self.kv = await self.nc.jetstream().key_value("agents")

    async def close(self) -> None:
        await self.client.close()
        if self.nc is not None:
            await self.nc.close()

    def spawn(self, role: str) -> stack.ServiceProcess:
        proc = self.cluster.spawn(role)
        (self.dispatchers if role == "dispatcher" else self.projectors).append(proc)
        return proc

    def alive(self, role: str) -> list[stack.ServiceProcess]:
        procs = self.dispatchers if role == "dispatcher" else self.projectors
        return [p for p in procs if p.proc is not None and p.proc.poll() is None]

    async def leader(self, role: str) -> dict[str, Any] | None:
        assert self.kv is not None
        try:
            entry = await self.kv.get(f"leader.{role}")
        except Exception:  # none yet, or deleted on a clean stop
            return None
        return orjson.loads(entry.value) if entry.value else None

    async def standbys(self, role: str) -> set[str]:
        """The sources of the fresh standby records of `role`."""
        status, body = await self.client.get("/system/selfcheck")
        assert status == 200, body
        return set(body["leaders"][role]["standby_sources"])

    async def active(self, role: str) -> stack.ServiceProcess:
        """The process whose source the unexpired leader record names."""

        async def found() -> stack.ServiceProcess | None:
            held = await self.leader(role)
            if held is None or envelope.parse_time(held["until"]) <= envelope.now():
                return None
            return next((p for p in self.alive(role) if p.source == held["source"]), None)

        return await infra.wait_until(found, timeout_s=20, interval_s=0.05, what=f"an active {role}")

    async def ready(self) -> None:
        """An active and a standby of each role (a standby spawned where one is missing)."""
        for role in ("dispatcher", "projector"):
            while len(self.alive(role)) < 2:
                self.spawn(role)
            active = await self.active(role)
            others = {p.source for p in self.alive(role)} - {active.source}

            async def standing_by(role: str = role, others: set[str] = others) -> bool:
                return await self.standbys(role) == others

            await infra.wait_until(standing_by, timeout_s=30, interval_s=0.1, what=f"{role} standbys {others}")

    async def takeover(self, role: str, old: str, *, since: float, timeout_s: float) -> float:
        """Seconds from `since` (time.monotonic) until another process holds the role."""

        async def moved() -> bool:
            held = await self.leader(role)
            return held is not None and held["source"] != old and envelope.parse_time(held["until"]) > envelope.now()

        await infra.wait_until(moved, timeout_s=timeout_s, interval_s=0.02, what=f"another {role} to take over")
        return time.monotonic() - since

    async def submit(self, count: int) -> list[str]:
        """`count` submissions, a mix of plain jobs, jobs failing once (then retried) and 2-step pipeline runs."""
        gate = asyncio.Semaphore(16)

        async def one(i: int) -> str:
            kind = i % 10
            if kind == 0:
                path, payload = f"/pipeline/{PIPELINE}", {"message": f"p{i}"}
            elif kind == 1:
                path, payload = "/plugin/flaky/poll", {"counter_file": str(self.root / f"flaky-{i}"), "succeed_on": 2}
            else:
                path, payload = "/plugin/echo_py/poll", {"message": f"m{i}"}
            async with gate:
                status, body = await self.client.post(path, json={"payload": payload})
            assert status == 202, (status, body)
            if kind == 0:
                self.roots.add(body["job_id"])
            return str(body["job_id"])

        start, self.n = self.n, self.n + count
        ids = list(await asyncio.gather(*(one(i) for i in range(start, start + count))))
        self.accepted += ids
        return ids

    async def all_final(self, timeout_s: float) -> None:
        async def done() -> bool:
            _, final = await eventlog.job_progress(self.cluster.nats_url, roots=self.roots)
            return set(self.accepted) <= final

        await infra.wait_until(done, timeout_s=timeout_s, interval_s=0.2, what="every accepted job to be final")

    async def succeeded_count(self) -> int:
        _, final = await eventlog.job_progress(self.cluster.nats_url, roots=self.roots)
        return len(final & set(self.accepted))


@pytest.fixture(scope="module")
async def fleet(postgres: infra.Postgres, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Fleet]:
    root = tmp_path_factory.mktemp("failover")
    database_url = await postgres.new_database()
    cluster = ProcessCluster(root, fleet_config(), database_url=database_url)
    fleet = Fleet(cluster, root, database_url)
    try:
        await cluster.start()
        fleet.dispatchers.append(cluster.procs["dispatcher"])
        fleet.projectors.append(cluster.procs["projector"])
        await fleet.open()
        await fleet.ready()
        yield fleet
    finally:
        await fleet.close()
        for proc in [*fleet.dispatchers, *fleet.projectors]:
            with_signal(proc, signal.SIGCONT)
            proc.kill()
        await cluster.stop()
        await cluster.kill_all()


def with_signal(proc: stack.ServiceProcess, sig: signal.Signals) -> None:
    if proc.pid is not None and proc.proc is not None and proc.proc.poll() is None:
        os.kill(proc.pid, sig)


def dispatcher_events(events: list[eventlog.Event]) -> list[eventlog.Event]:
    return [e for e in events if e.source.startswith("dispatcher/")]


def deciders(events: list[eventlog.Event], *, after: int) -> list[str]:
    """The sources of the dispatcher events stored after seq `after`, each run of one source once: one decider
    at a time gives one run per term (a standby that stored anything while another led would add runs)."""
    runs: list[str] = []
    for e in dispatcher_events(events):
        if e.seq > after and (not runs or runs[-1] != e.source):
            runs.append(e.source)
    return runs


async def last_seq(url: str) -> int:
    nc = await nats.connect(url)
    try:
        return int((await nc.jetstream().stream_info("EVENTS")).state.last_seq)
    finally:
        await nc.close()


async def time_of(url: str, seq: int) -> float:
    """The envelope time (epoch seconds) of the EVENTS message at `seq`."""
    nc = await nats.connect(url)
    try:
        msg = await nc.jetstream().get_msg("EVENTS", seq)
        return envelope.parse_time(orjson.loads(msg.data)["time"]).timestamp()
    finally:
        await nc.close()


async def test_one_active_dispatcher_and_a_sigkilled_one_is_replaced_mid_load(fleet: Fleet) -> None:
    old = await fleet.active("dispatcher")
    standby = next(p for p in fleet.alive("dispatcher") if p is not old)
    status, health = await fleet.client.get("/healthz")
    assert status == 200 and health["leaders"]["dispatcher"]["holder"] == old.source, health
    assert health["leaders"]["dispatcher"]["held"] is True and health["leaders"]["dispatcher"]["standbys"] == 1
    assert health["leaders"]["projector"]["held"] is True and health["leaders"]["projector"]["standbys"] == 1
    anonymous = (await fleet.client.get("/healthz", token=None))[1]["leaders"]["dispatcher"]
    assert anonymous["held"] is True and "holder" not in anonymous  # instance names for an admin only

    before = await last_seq(fleet.cluster.nats_url)
    t0 = time.monotonic()
    first = await fleet.submit(150)
    await infra.wait_until(
        lambda: _at_least(fleet.succeeded_count(), 40), timeout_s=60, interval_s=0.1, what="40 jobs final"
    )
    killed_at, wall = time.monotonic(), time.time()
    old.kill()
    took = await fleet.takeover("dispatcher", old.source, since=killed_at, timeout_s=LEASE_TTL_S + 5)
    second = await fleet.submit(150)
    submitted = time.monotonic() - killed_at
    await fleet.all_final(timeout_s=90)
    print(
        f"\nkill at {killed_at - t0:.1f}s, second half submitted {submitted:.1f}s later, all final after {time.monotonic() - killed_at:.1f}s"
    )

    events = await eventlog.read_all(fleet.cluster.nats_url)
    jobs = eventlog.fold(events)
    for job_id in [*first, *second]:
        job = jobs[job_id]
        assert job.final == "succeeded", (job_id, job.trail)
    doubled = [j.trail for j in jobs.values() if len(j.succeeded) > 1]
    assert not doubled, doubled[:3]
    retried = [j for j in jobs.values() if j.plugin == "flaky"]
    assert retried and all(j.failed == [1] and j.succeeded == [2] for j in retried)
    steps: set[str] = set()
    for _ in range(2):  # step one's parent is the root, step two's is step one
        steps |= {j.job_id for j in jobs.values() if j.parent_job_id in fleet.roots | steps}
    assert len(steps) == 2 * len(fleet.roots & {*first, *second})
    assert all(jobs[j].final == "succeeded" for j in steps)
    # exactly one decider at a time: the standby stored nothing before the kill, the killed one nothing after
    assert deciders(events, after=before) == [old.source, standby.source]
    first_new = min(e.seq for e in dispatcher_events(events) if e.source == standby.source)
    decided_after = await time_of(fleet.cluster.nats_url, first_new) - wall
    print(
        f"\nSIGKILL of the active dispatcher: lease taken after {took:.2f}s, first decision after {decided_after:.2f}s"
    )
    assert took < LEASE_TTL_S + 3 and decided_after < LEASE_TTL_S + 3
    await fleet.ready()


async def _at_least(count: Any, n: int) -> bool:
    return int(await count) >= n


async def test_a_graceful_stop_hands_over_at_once(fleet: Fleet) -> None:
    old = await fleet.active("dispatcher")
    before = await last_seq(fleet.cluster.nats_url)
    stopping_at = time.monotonic()
    with_signal(old, signal.SIGTERM)
    took = await fleet.takeover("dispatcher", old.source, since=stopping_at, timeout_s=LEASE_TTL_S)
    assert await old.wait(timeout_s=15) == 0  # a clean exit
    new = await fleet.active("dispatcher")
    ids = await fleet.submit(20)
    await fleet.all_final(timeout_s=30)
    events = await eventlog.read_all(fleet.cluster.nats_url)
    queued = {e.job_id: e.source for e in events if e.type == "job.queued" and e.job_id in ids}
    assert set(queued.values()) == {new.source}, queued
    assert deciders(events, after=before) in ([old.source, new.source], [new.source])
    print(f"\nSIGTERM of the active dispatcher: lease taken after {took:.2f}s")
    assert took < 2.0  # released on the way out: no lease to wait out
    await fleet.ready()


async def test_a_schedule_fires_once_per_due_time_across_a_paused_and_a_killed_dispatcher(fleet: Fleet) -> None:
    paused = await fleet.active("dispatcher")
    other = next(p for p in fleet.alive("dispatcher") if p is not paused)
    before = await last_seq(fleet.cluster.nats_url)
    # a pause (GC, a stalled VM) longer than the lease: the standby takes over when it runs out, and the paused
    # one, woken up, must see that its lease is gone and decide nothing
    stopped_at = time.monotonic()
    with_signal(paused, signal.SIGSTOP)
    try:
        took = await fleet.takeover("dispatcher", paused.source, since=stopped_at, timeout_s=LEASE_TTL_S + 5)
    finally:
        with_signal(paused, signal.SIGCONT)
    await infra.wait_until(
        lambda: _contains(fleet.standbys("dispatcher"), paused.source),
        timeout_s=10,
        interval_s=0.1,
        what="the paused dispatcher to stand by",
    )
    # then the new active is SIGKILLed (after two fires of its own): the one that was paused takes over again
    await fires_by(fleet, other.source, after=before, count=2)
    killed_at = time.monotonic()
    other.kill()
    at_kill = await last_seq(fleet.cluster.nats_url)
    took_back = await fleet.takeover("dispatcher", other.source, since=killed_at, timeout_s=LEASE_TTL_S + 5)
    await fires_by(fleet, paused.source, after=at_kill, count=2)

    events = await eventlog.read_all(fleet.cluster.nats_url)
    # one decider at a time: the paused one stored nothing from its pause until it took the lease back
    assert deciders(events, after=before) in (
        [paused.source, other.source, paused.source],
        [other.source, paused.source],
    ), deciders(events, after=before)
    schedule_subject = f"evt.schedule.echo_py.{SCHEDULE}"
    fired = [e for e in events if e.subject == schedule_subject and e.type == "schedule.fired"]
    per_due = collections.Counter(e.data["at"] for e in fired)
    assert all(n == 1 for n in per_due.values()), [at for at, n in per_due.items() if n > 1]
    assert not [e for e in events if e.subject == schedule_subject and e.type == "schedule.skipped"]
    due = sorted(envelope.parse_time(at) for at in per_due)
    gaps = [(a, b) for a, b in itertools.pairwise(due) if (b - a).total_seconds() != 1.0]
    assert not gaps, gaps  # every due time since the module began fired (catch_up), none twice
    assert due[-1] > envelope.now() - timedelta(seconds=3)  # and the one that took back goes on firing
    jobs = collections.Counter(e.data["job_id"] for e in fired)
    assert all(n == 1 for n in jobs.values())
    queued = collections.Counter(e.job_id for e in events if e.type == "job.queued" and e.job_id in jobs)
    assert all(queued[j] == 1 for j in jobs), "a fire's job queued twice"
    print(
        f"\n{len(per_due)} fires, each due time once; pause longer than the lease: taken after {took:.2f}s; "
        f"SIGKILL of the new active: taken back after {took_back:.2f}s"
    )
    assert LEASE_TTL_S - 1.5 <= took < LEASE_TTL_S + 3  # by expiry: the paused process is alive
    assert took_back < LEASE_TTL_S + 3
    await fleet.ready()


async def fires_by(fleet: Fleet, source: str, *, after: int, count: int) -> None:
    """Until `source` has stored `count` fires of the schedule after seq `after` (the subject's last message,
    polled well within the second between two fires)."""
    seen: set[int] = set()
    js = fleet.nc.jetstream()

    async def enough() -> bool:
        msg = await js.get_last_msg("EVENTS", f"evt.schedule.echo_py.{SCHEDULE}")
        env = orjson.loads(msg.data)
        if msg.seq > after and env["source"] == source and env["type"] == "schedule.fired":
            seen.add(msg.seq)
        return len(seen) >= count

    await infra.wait_until(enough, timeout_s=15, interval_s=0.1, what=f"{count} fires by {source}")


async def _contains(found: Any, item: str) -> bool:
    return item in await found


async def test_a_sigkilled_projector_is_replaced_and_the_read_models_catch_up(fleet: Fleet) -> None:
    old = await fleet.active("projector")
    killed_at = time.monotonic()
    old.kill()
    ids = await fleet.submit(30)
    took = await fleet.takeover("projector", old.source, since=killed_at, timeout_s=LEASE_TTL_S + 5)

    async def shown() -> str | None:
        status, body = await fleet.client.get("/healthz")
        holder = body["leaders"]["projector"].get("holder") if status == 200 else None
        return holder if holder not in (None, old.source) else None

    new = await infra.wait_until(shown, timeout_s=5, interval_s=0.05, what="/healthz to show the new projector")
    assert new in {p.source for p in fleet.alive("projector")}
    await fleet.all_final(timeout_s=30)
    final_at, last = time.monotonic(), await last_seq(fleet.cluster.nats_url)

    async def caught_up() -> bool:
        conn = await asyncpg.connect(fleet.database_url, server_settings={"search_path": "headrace"})
        try:
            done = await conn.fetchval("SELECT count(*) FROM jobs WHERE job_id = ANY($1) AND status = 'succeeded'", ids)
            checkpoint = await conn.fetchval("SELECT stream_seq FROM checkpoint WHERE name = 'events'")
        finally:
            await conn.close()
        return done == len(ids) and checkpoint >= last

    await infra.wait_until(caught_up, timeout_s=10, interval_s=0.05, what="the read models to show the new jobs")
    lag = time.monotonic() - final_at
    print(
        f"\nSIGKILL of the active projector: lock taken after {took:.2f}s; the jobs submitted meanwhile final in "
        f"the log {final_at - killed_at:.2f}s after the kill and in the read models {lag:.2f}s later"
    )
    assert took < 3.0

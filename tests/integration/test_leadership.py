"""The leadership lease on a real nats-server: one holder at a time, renewal, release, expiry, fencing, the
takeover of a dead local holder's lease, and the active/standby loop around it (services/core/leases.py,
services/core/leadership.py)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator

import orjson
import pytest

from services.core import bus as bus_mod
from services.core import envelope, leadership, leases, subjects
from tests.support.infra import wait_until

TTL_S, RENEW_S = 1.5, 0.3


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[bus_mod.Bus]:
    b = await bus_mod.Bus.connect(nats_url, name="leases-test")
    await b.ensure_topology()
    yield b
    await b.close()


def lease(bus: bus_mod.Bus, name: str, *, ttl_s: float = TTL_S) -> leases.Lease:
    return leases.Lease(bus, "dispatcher", holder=name, source=f"src-{name}", ttl_s=ttl_s, renew_s=RENEW_S)


async def record(bus: bus_mod.Bus) -> dict[str, object] | None:
    kv = await bus.kv(subjects.KV_AGENTS)
    try:
        return leases.decode((await kv.get(leases.leader_key("dispatcher"))).value)
    except Exception:
        return None


async def test_one_holder_renewal_and_release(bus: bus_mod.Bus) -> None:
    a, b = lease(bus, "a"), lease(bus, "b")
    assert await a.try_acquire() and a.valid()
    assert not await b.try_acquire() and not b.valid() and b.other is not None and b.other["holder"] == "a"
    held = await record(bus)
    assert held is not None and held["holder"] == "a" and held["source"] == "src-a" and held["kind"] == "lease"
    since, until = envelope.parse_time(str(held["since"])), envelope.parse_time(str(held["until"]))
    assert abs((until - since).total_seconds() - TTL_S) < 0.05
    # the holder stops deciding a margin before `until`: validity = ttl - margin from its write
    assert a.remaining_s() <= TTL_S - leases.margin_s(TTL_S, RENEW_S) + 0.01
    first = a.revision
    assert await a.renew() and a.revision != first
    renewed = await record(bus)
    assert renewed is not None and renewed["since"] == held["since"] and renewed["until"] > held["until"]
    await a.release()
    assert not a.valid() and await record(bus) is None
    assert await b.try_acquire()  # released: taken at once, no expiry to wait for


async def test_an_expired_lease_is_taken_over_and_its_old_holder_was_fenced_first(bus: bus_mod.Bus) -> None:
    a, b = lease(bus, "a"), lease(bus, "b")
    assert await a.try_acquire()
    held = await record(bus)
    assert held is not None
    t0 = time.monotonic()
    # `a` stops renewing (paused, partitioned): `b` polls until the lease ran out by its clock
    await wait_until(b.try_acquire, timeout_s=TTL_S + 2, interval_s=0.05, what="b to take the expired lease")
    waited = time.monotonic() - t0
    assert envelope.now() >= envelope.parse_time(str(held["until"]))
    assert TTL_S - 0.3 <= waited <= TTL_S + 1.0, waited
    assert not a.valid()  # fenced before b could take it (a margin before `until`)
    assert not await a.renew() and a.revision is None  # its compare-and-set fails: lost for sure
    taken = await record(bus)
    assert taken is not None and taken["holder"] == "b"


async def test_a_lease_of_a_dead_process_on_this_host_is_taken_at_once(bus: bus_mod.Bus) -> None:
    child = subprocess.Popen(["true"])
    child.wait()
    now = envelope.now()
    dead = leases.lease_record(
        "dispatcher", holder="dead", source="src-dead", since=now, until=now, ttl_s=60, renew_s=1
    )
    dead["pid"], dead["until"] = child.pid, envelope.rfc3339(now.replace(year=now.year + 1))
    kv = await bus.kv(subjects.KV_AGENTS)
    await kv.put(leases.leader_key("dispatcher"), orjson.dumps(dead))
    alive = {**dead, "pid": 1}  # a live process (init) with an unexpired lease is waited for
    b = lease(bus, "b")
    await kv.put(leases.leader_key("dispatcher"), orjson.dumps(alive))
    assert not await b.try_acquire()
    await kv.put(leases.leader_key("dispatcher"), orjson.dumps(dead))
    assert await b.try_acquire()


class Role:
    """One contender: a Leadership whose term runs a task that counts what it decided."""

    def __init__(self, bus: bus_mod.Bus, name: str) -> None:
        self.lease = lease(bus, name)
        self.stop = asyncio.Event()
        self.elections = 0
        self.depositions = 0
        self.leadership = leadership.Leadership(
            self.lease,
            role="dispatcher",
            source=name,
            elected=self.elected,
            deposed=self.deposed,
            renew_s=RENEW_S,
            standby=leases.Standby(bus, "dispatcher", holder=name, source=name, interval_s=RENEW_S),
        )
        self.task: asyncio.Task[None] | None = None

    async def elected(self, term: leadership.Term) -> None:
        self.elections += 1
        term.spawn("work", term.ended.wait())

    async def deposed(self) -> None:
        self.depositions += 1

    async def start(self) -> None:
        await self.leadership.start()
        self.task = asyncio.create_task(self.leadership.run(self.stop))

    async def close(self) -> None:
        self.stop.set()
        if self.task is not None:
            await self.task


async def test_active_standby_loop_hands_over_on_stop_and_on_lost_renewals(bus: bus_mod.Bus) -> None:
    a, b = Role(bus, "a"), Role(bus, "b")
    await a.start()
    await b.start()
    try:
        assert a.leadership.active and not b.leadership.active
        a.leadership.fence()
        with pytest.raises(leadership.Deposed):
            b.leadership.fence()
        await wait_until(
            lambda: _standbys(bus, 1), timeout_s=5, interval_s=0.05, what="b's standby record to be counted"
        )
        # a clean stop releases: b takes over within a poll
        t0 = time.monotonic()
        await a.close()
        # `active` turns true as the term begins, before its `elected` callback has run: wait for both
        await wait_until(
            lambda: _true(b.leadership.active and b.elections == 1), timeout_s=3, interval_s=0.02, what="b to take over"
        )
        assert time.monotonic() - t0 < 1.5
        assert a.depositions == 1 and b.elections == 1
        status = await leases.status(bus, "dispatcher")
        assert status.held and status.leader is not None and status.leader["holder"] == "b" and not status.standbys
        # another holder's record replaces b's (b's renewal fails its compare-and-set): b stands down at once
        kv = await bus.kv(subjects.KV_AGENTS)
        entry = await kv.get(leases.leader_key("dispatcher"))
        other = {**(leases.decode(entry.value) or {}), "holder": "c", "source": "src-c"}
        await kv.update(leases.leader_key("dispatcher"), orjson.dumps(other), last=entry.revision)
        await wait_until(lambda: _true(not b.leadership.active), timeout_s=3, interval_s=0.02, what="b to stand down")
        assert b.depositions == 1
        with pytest.raises(leadership.Deposed):
            b.leadership.fence()
    finally:
        await a.close()
        await b.close()


async def test_the_active_one_acts_on_a_stop_and_on_a_dead_task_at_once_not_at_its_next_renewal(
    bus: bus_mod.Bus,
) -> None:
    """A renewal every 5 s: a stop, or a term task that died, is acted on within a fraction of that."""
    failing = asyncio.Event()

    async def elected(term: leadership.Term) -> None:
        async def work() -> None:  # like every term task, it ends with its term
            ended = asyncio.ensure_future(term.ended.wait())
            await asyncio.wait([ended, asyncio.ensure_future(failing.wait())], return_when=asyncio.FIRST_COMPLETED)
            if not term.ended.is_set():
                raise RuntimeError("the term's task died")

        term.spawn("work", work())

    async def deposed() -> None:
        pass

    def role(name: str) -> tuple[leadership.Leadership, asyncio.Event]:
        lease_ = leases.Lease(bus, "dispatcher", holder=name, source=name, ttl_s=30.0, renew_s=5.0)
        return leadership.Leadership(
            lease_, role="dispatcher", source=name, elected=elected, deposed=deposed, renew_s=5.0
        ), asyncio.Event()

    one, stop = role("one")
    await one.start()
    run = asyncio.create_task(one.run(stop))
    await asyncio.sleep(0.2)  # in its renewal wait
    t0 = time.monotonic()
    stop.set()
    await asyncio.wait_for(run, timeout=10)
    assert time.monotonic() - t0 < 0.5 and await record(bus) is None  # stopped and released at once

    two, stop = role("two")
    await two.start()
    assert two.active
    run = asyncio.create_task(two.run(stop))
    await asyncio.sleep(0.2)
    t0 = time.monotonic()
    failing.set()
    with pytest.raises(RuntimeError, match="died"):
        await asyncio.wait_for(run, timeout=10)
    assert time.monotonic() - t0 < 0.5 and not two.active


async def _standbys(bus: bus_mod.Bus, n: int) -> bool:
    return len((await leases.status(bus, "dispatcher")).standbys) == n


async def _true(value: bool) -> bool:
    return value

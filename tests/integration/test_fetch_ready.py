"""consumers.fetch_ready hands back a batch as soon as a message has arrived. nats-py's fetch(n) does not
when the message came through a pull request an earlier, timed-out fetch left on the server: it takes it as
its first and then waits out the rest of its timeout for its own request to fill, which made the
dispatcher's and the runner's pickups stall for up to their whole fetch timeout (~0.5 s, measured)."""

from __future__ import annotations

import asyncio
import time

import nats.errors
import orjson
from nats.aio.msg import Msg

from services.core import bus as bus_mod
from services.core import consumers, envelope, subjects


async def test_a_message_arriving_while_the_pull_lingers_is_handed_back_at_once(nats_url: str) -> None:
    bus = await bus_mod.Bus.connect(nats_url, name="fetch-ready-test")
    try:
        await bus.ensure_topology()
        sub = await consumers.ensure_pull(
            bus, stream=subjects.EVENTS, durable="fetch-ready", filter_subjects=[subjects.system_event("probe")]
        )
        # a pull request an earlier fetch left behind when it timed out (it expires on the server a moment
        # after the client gave up): the next message goes to it, into the inbox every fetch reads
        orphan = orjson.dumps({"batch": 1, "expires": 30_000_000_000})
        await bus.nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{subjects.EVENTS}.fetch-ready", orphan, reply=sub._deliver)  # type: ignore[attr-defined]
        fetching = asyncio.create_task(consumers.fetch_ready(sub, 64, timeout=20))
        await asyncio.sleep(0.3)  # the pull is lingering now: nothing was there when it began
        began = time.monotonic()
        await bus.publish(subjects.system_event("probe"), envelope.make("system.probe", source="t", data={}))
        msgs = await asyncio.wait_for(fetching, timeout=10)
        assert len(msgs) == 1 and time.monotonic() - began < 10  # not the 20 s the pull could linger
        await msgs[0].ack()
        # what is pending comes with the first message (a message delivered before the rest were stored can
        # come alone), in order
        await bus.publish_all(
            [
                (subjects.system_event("probe"), envelope.make("system.probe", source="t", data={"i": i}))
                for i in range(10)
            ]
        )
        got: list[int] = []
        calls = 0
        while len(got) < 10 and calls < 10:
            calls += 1
            got += [envelope.decode(m.data).data["i"] for m in await consumers.fetch_ready(sub, 64, timeout=5)]
        assert got == list(range(10)) and calls <= 3
    finally:
        await bus.close()


async def test_a_stop_abandons_an_idle_pull_and_nothing_published_later_is_lost(nats_url: str) -> None:
    """A stopping service does not wait out its idle pull (each stack's stop waited ~0.5 s per fetch loop);
    a message stored after the abandoned pull is fetched by the next one (at the latest after ack_wait)."""
    bus = await bus_mod.Bus.connect(nats_url, name="fetch-ready-stop-test")
    try:
        await bus.ensure_topology()
        sub = await consumers.ensure_pull(
            bus,
            stream=subjects.EVENTS,
            durable="fetch-ready-stop",
            filter_subjects=[subjects.system_event("stop-probe")],
            ack_wait_s=2.0,
        )
        stop = asyncio.Event()
        fetching = asyncio.create_task(consumers.fetch_ready(sub, 8, timeout=60, stop=stop))
        await asyncio.sleep(0.2)
        assert not fetching.done()
        stop.set()
        await asyncio.wait({fetching}, timeout=10)  # not the 60 s the pull was given
        assert fetching.done() and isinstance(fetching.exception(), TimeoutError)
        again = asyncio.create_task(consumers.fetch_ready(sub, 8, timeout=60, stop=stop))
        await asyncio.wait({again}, timeout=10)  # already stopped: no pull at all
        assert again.done() and isinstance(again.exception(), TimeoutError)
        await bus.publish(subjects.system_event("stop-probe"), envelope.make("system.probe", source="t", data={}))
        got: list[Msg] = []
        for _ in range(20):
            try:
                got = await consumers.fetch_ready(sub, 8, timeout=1)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            break
        assert len(got) == 1
        await got[0].ack()
    finally:
        await bus.close()

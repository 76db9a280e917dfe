"""publish_all sends a stream's share of ATOMIC_MIN or more messages as JetStream atomic batches (one sync for
the batch at `sync_interval: always`), and stays exactly-once when a batch holds an id already stored: the
server refuses the whole batch, and the bus publishes it again one message at a time."""

from __future__ import annotations

import pytest

from services.core import bus as bus_mod
from services.core import envelope, subjects


def _events(tag: str, n: int) -> list[tuple[str, envelope.Envelope]]:
    return [
        (
            subjects.system_event(f"probe_{tag}"),
            envelope.make("system.probe", source="test", data={"i": i}, id=f"{tag}:{i}"),
        )
        for i in range(n)
    ]


async def _stored(bus: bus_mod.Bus, tag: str) -> list[tuple[int, dict[str, str] | None, int]]:
    """(seq, headers, data.i) of every stored message of `tag`, in stream order."""
    found = []
    for seq, env in await bus.history(subjects.EVENTS, subjects.system_event(f"probe_{tag}")):
        raw = await bus.js.get_msg(subjects.EVENTS, seq)
        found.append((seq, raw.headers, int(env.data["i"])))
    return found


async def test_a_large_share_is_one_atomic_batch_and_a_small_one_is_not(nats_url: str) -> None:
    bus = await bus_mod.Bus.connect(nats_url, name="atomic-test")
    try:
        await bus.ensure_topology()
        assert subjects.EVENTS in bus.atomic_streams  # the wheel's nats-server (2.12+) stores atomic batches
        large, small = _events("large", bus_mod.ATOMIC_MIN + 8), _events("small", bus_mod.ATOMIC_MIN - 1)
        # the shares are counted per stream: the work items beside the large share of EVENTS go one by one
        work = [
            (subjects.work("probe", "run"), envelope.make("job.work", source="test", data={}, id=f"w:{i}"))
            for i in range(3)
        ]
        acks = await bus.publish_all([*large, *work])
        assert [ack.stream for ack in acks] == [subjects.EVENTS] * len(large) + [subjects.WORK] * 3
        acks = acks[: len(large)] + await bus.publish_all(small)
        stored_large, stored_small = await _stored(bus, "large"), await _stored(bus, "small")
        assert [i for _, _, i in stored_large] == list(range(len(large)))
        assert [ack.seq for ack in acks[: len(large)]] == [seq for seq, _, _ in stored_large]
        assert [ack.seq for ack in acks[len(large) :]] == [seq for seq, _, _ in stored_small]
        assert len({(headers or {}).get(subjects.BATCH_ID) for _, headers, _ in stored_large}) == 1
        assert all(subjects.BATCH_ID in (headers or {}) for _, headers, _ in stored_large)
        assert not any(subjects.BATCH_ID in (headers or {}) for _, headers, _ in stored_small)
        raw = await bus.js.get_last_msg(subjects.WORK, subjects.work("probe", "run"))
        assert subjects.BATCH_ID not in (raw.headers or {})
    finally:
        await bus.close()


async def test_a_batch_holding_a_stored_id_goes_again_one_by_one_and_nothing_is_stored_twice(nats_url: str) -> None:
    bus = await bus_mod.Bus.connect(nats_url, name="atomic-dup-test")
    try:
        await bus.ensure_topology()
        events = _events("redelivered", bus_mod.ATOMIC_MIN * 2)
        await bus.publish_all(events[:5])  # a first try stored a few of them (then its input was redelivered)
        acks = await bus.publish_all(events)
        stored = await _stored(bus, "redelivered")
        assert [i for _, _, i in stored] == list(range(len(events)))  # every message once, in order
        assert [ack.seq for ack in acks] == [seq for seq, _, _ in stored]
        assert sum(bool(ack.duplicate) for ack in acks) == 5
    finally:
        await bus.close()


async def test_a_batch_the_server_refuses_for_another_reason_goes_one_by_one(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over nats-server's batch limit (1000 messages) the whole batch is refused: the bus must still store
    every message (once), or the caller's input would come back forever."""
    monkeypatch.setattr(bus_mod, "ATOMIC_MAX", 5000)
    bus = await bus_mod.Bus.connect(nats_url, name="atomic-refused-test")
    try:
        await bus.ensure_topology()
        events = _events("oversized", 1200)
        acks = await bus.publish_all(events)
        stored = await _stored(bus, "oversized")
        assert [i for _, _, i in stored] == list(range(len(events)))
        assert [ack.seq for ack in acks] == [seq for seq, _, _ in stored]
        assert not any(subjects.BATCH_ID in (headers or {}) for _, headers, _ in stored)
    finally:
        await bus.close()

"""The dispatcher stores a batch's events before its work items, and a first attempt's work item carries the
EVENTS sequence of its job's `queued` (`claim_after`), which the runner's compare-and-set claim is checked
against (services/dispatcher/publishing.py); a redelivered batch gets the stored original's sequence."""

from __future__ import annotations

import dataclasses

from services.core import bus as bus_mod
from services.core import envelope, subjects
from services.dispatcher import decisions, publishing


def _decided(job_id: str, *, attempt: int = 1) -> decisions.Published:
    queued = envelope.make(
        "job.queued",
        source="test",
        job_id=job_id,
        id=f"{job_id}:queued",
        data={"plugin": "echo", "command": "poll", "attempt": 1},
    )
    work = envelope.make(
        "job.work",
        source="test",
        job_id=job_id,
        id=f"{job_id}:{attempt}:work",
        data={"plugin": "echo", "command": "poll", "payload": {}, "attempt": attempt, "timeout_s": 5},
    )
    return [(subjects.job_event(job_id, "queued"), queued), (subjects.work("echo", "poll"), work)]


async def _all_work(bus: bus_mod.Bus) -> list[envelope.Envelope]:
    info = await bus.js.stream_info(subjects.WORK)  # WORK serves no direct gets: read it message by message
    return [
        envelope.decode((await bus.js.get_msg(subjects.WORK, seq)).data or b"")
        for seq in range(info.state.first_seq, info.state.last_seq + 1)
    ]


async def _work_of(bus: bus_mod.Bus, job_id: str) -> envelope.Envelope:
    for env in await _all_work(bus):
        if env.job_id == job_id:
            return env
    raise AssertionError(f"no work item for {job_id}")


async def test_work_items_carry_their_queued_sequence(nats_url: str) -> None:
    bus = await bus_mod.Bus.connect(nats_url, name="claim-after-test")
    try:
        await bus.ensure_topology()
        many = [f"j{i}" for i in range(1, publishing.CLAIM_AFTER_MIN + 1)]
        await publishing.publish_decisions(bus, [item for job_id in many for item in _decided(job_id)])
        for job_id in many:
            seq, _ = await bus.last_message(subjects.EVENTS, subjects.job_event(job_id, "queued")) or (None, None)
            assert seq is not None and (await _work_of(bus, job_id)).data["claim_after"] == seq
        # the batch decided again (a redelivery, or a copy past the duplicate window: here its work items get
        # new ids, as they would once the window forgot the old ones): no `queued` of it is the job's first
        # event any more, so no copy may be claimed without reading the log
        again = [
            (subject, dataclasses.replace(env, id=f"{env.id}:copy") if env.type == "job.work" else env)
            for job_id in many
            for subject, env in _decided(job_id)
        ]
        await publishing.publish_decisions(bus, again)
        copies = [env for env in await _all_work(bus) if env.id.endswith(":copy")]
        assert len(copies) == len(many) and not any("claim_after" in env.data for env in copies)
        queued = [t for _, env in await bus.history(subjects.EVENTS, subjects.job_events("j1")) for t in [env.type]]
        assert queued == ["job.queued"]  # stored once: the second was a duplicate of the first
        # one job alone: stored at once, and its runner reads the log before claiming
        await publishing.publish_decisions(bus, _decided("alone"))
        assert "claim_after" not in (await _work_of(bus, "alone")).data
    finally:
        await bus.close()


def test_only_a_first_attempts_work_item_gets_it() -> None:
    _, work = _decided("j3")[1]
    assert publishing.with_claim_after(work, 7).data["claim_after"] == 7
    _, retry = _decided("j4", attempt=2)[1]
    assert "claim_after" not in publishing.with_claim_after(retry, 7).data
    assert "claim_after" not in publishing.with_claim_after(work, None).data


async def test_publish_firsts_tells_a_first_event_from_a_later_one(nats_url: str) -> None:
    bus = await bus_mod.Bus.connect(nats_url, name="firsts-test")
    try:
        await bus.ensure_topology()
        earlier = envelope.make("job.queued", source="test", job_id="old", id="old:queued", data={})
        await bus.publish(subjects.job_event("old", "queued"), earlier)
        for n in (3, bus_mod.ATOMIC_MIN + 1):  # one by one, and an atomic batch refused for its one old job
            ids = [f"new{n}_{i}" for i in range(n - 1)]
            items = [
                (
                    subjects.job_event(job_id, "queued"),
                    envelope.make("job.queued", source="test", job_id=job_id, id=f"{job_id}:queued:{n}", data={}),
                    subjects.job_events(job_id),
                )
                for job_id in ["old", *ids]
            ]
            seqs = await bus.publish_firsts(items)
            assert seqs[0] is None and all(isinstance(seq, int) for seq in seqs[1:])
            for job_id, seq in zip(ids, seqs[1:], strict=True):
                stored = await bus.history(subjects.EVENTS, subjects.job_events(job_id))
                assert [s for s, _ in stored] == [seq]
        # the later event was still stored (plainly), once
        assert len(await bus.history(subjects.EVENTS, subjects.job_events("old"))) == 3
    finally:
        await bus.close()

"""Events from outside on NATS: a plain nats-py publisher on `ingest.<type>` starts the pipelines
whose `on` is that type; anything invalid is kept as `ingest.rejected` and listed by
GET /events/rejected; a redelivered message starts nothing twice."""

from __future__ import annotations

from typing import Any

import nats
import orjson

from services.core import subjects
from services.dispatcher import ingest, routing
from tests.support.infra import wait_until
from tests.support.stack import TOKENS, Stack

PIPES = [
    {
        "name": "on_order",
        "on": "order.created",
        "steps": [{"id": "ack", "uses": "echo_py", "with": {"order": "{payload.id}", "note": "order {payload.id}"}}],
    }
]


async def wait_root(s: Stack, root: str) -> dict[str, Any]:
    """The pipeline root a dispatched ingest event started, once final (it appears asynchronously)."""
    assert s.client is not None
    client = s.client

    async def exists() -> bool:
        return (await client.get(f"/job/{root}"))[0] == 200

    await wait_until(exists, timeout_s=15, what=f"pipeline root {root}")
    return await client.wait_job(root, {"succeeded", "failed"})


async def publisher(s: Stack) -> Any:
    assert s.config.nats_url
    return await nats.connect(s.config.nats_url)


async def test_a_nats_ingested_event_starts_its_pipeline(make_config: Any, start_stack: Any) -> None:
    s = await start_stack(make_config(pipelines=PIPES))
    nc = await publisher(s)
    try:
        js = nc.jetstream()
        ack = await js.publish("ingest.order.created", orjson.dumps({"type": "order.created", "payload": {"id": 42}}))
        # a core-NATS publisher (no PubAck) is captured by the INGEST stream just the same
        await nc.publish("ingest.order.created", orjson.dumps({"type": "order.created", "payload": {"id": 43}}))
        await nc.flush()
    finally:
        await nc.close()
    root = routing.derived_id(ingest.cause_id(ack.seq), "on_order")
    done = await wait_root(s, root)
    assert done["status"] == "succeeded" and done["submitted_by"] == "ingest" and done["plugin"] == "pipeline"
    client = s.client

    async def projected() -> Any:
        status, tree = await client.get(f"/job/{root}/tree")
        assert status == 200
        return next((n for n in tree if n["step_id"] == "ack" and n["status"] == "succeeded"), None)

    step = await wait_until(projected, timeout_s=15, what="the pipeline's step projected")
    assert step["result"]["result"]["echo"] == {"id": 42, "order": 42, "note": "order 42"}

    second = routing.derived_id(ingest.cause_id(ack.seq + 1), "on_order")
    assert (await wait_root(s, second))["status"] == "succeeded"

    assert s.api.bus is not None
    accepted = await s.api.bus.history(subjects.EVENTS, subjects.ingest_event("accepted"))
    assert [env.data["ingest_seq"] for _, env in accepted] == [ack.seq, ack.seq + 1]
    assert accepted[0][1].data["pipeline_roots"] == [root] and accepted[0][1].data["payload"] == {"id": 42}


async def test_an_event_no_pipeline_wants_is_accepted_and_starts_nothing(make_config: Any, start_stack: Any) -> None:
    s = await start_stack(make_config(pipelines=PIPES))
    nc = await publisher(s)
    try:
        ack = await nc.jetstream().publish("ingest.order.paid", orjson.dumps({"type": "order.paid", "payload": {}}))
    finally:
        await nc.close()
    assert s.api.bus is not None
    bus = s.api.bus

    async def recorded() -> Any:
        return await bus.history(subjects.EVENTS, subjects.ingest_event("accepted"))

    accepted = await wait_until(recorded, what="the accepted event")
    assert accepted[0][1].data["pipeline_roots"] == [] and accepted[0][1].data["ingest_seq"] == ack.seq


async def test_invalid_ingest_events_are_kept_as_rejected_and_listed(make_config: Any, start_stack: Any) -> None:
    s = await start_stack(make_config(pipelines=PIPES))
    junk = b"x" * 10_000
    nc = await publisher(s)
    try:
        js = nc.jetstream()
        for body in (
            b"not json {",
            orjson.dumps({"type": "order.created"}),
            orjson.dumps({"type": "order.deleted", "payload": {}}),
            junk,
        ):
            await js.publish("ingest.order.created", body)
        await js.publish("ingest.order.created", orjson.dumps({"type": "order.created", "payload": {"id": 1}}))
    finally:
        await nc.close()
    events_ro = TOKENS["events_ro"][0]

    async def listed() -> Any:
        status, body = await s.client.get("/events/rejected", token=events_ro)
        assert status == 200, body
        return body if body["count"] >= 4 else None

    body = await wait_until(listed, timeout_s=15, what="four rejected events listed")
    rows = body["events"]
    assert [r["ingest_seq"] for r in rows] == [4, 3, 2, 1]  # newest first
    assert rows[3]["reason"].startswith("not JSON") and rows[3]["raw"] == "not json {"
    assert "payload" in rows[2]["reason"] and rows[2]["subject"] == "ingest.order.created"
    assert "does not match" in rows[1]["reason"] and "order.deleted" in rows[1]["reason"]
    assert rows[0]["truncated"] is True and rows[0]["raw_bytes"] == 10_000 and len(rows[0]["raw"]) == ingest.RAW_LIMIT
    assert all(r["type"] == "order.created" and r["rejected_at"] for r in rows)

    status, one = await s.client.get("/events/rejected?limit=1", token=events_ro)
    assert status == 200 and [r["ingest_seq"] for r in one["events"]] == [4]
    status, page = await s.client.get("/events/rejected?limit=2&offset=2", token=events_ro)
    assert [r["ingest_seq"] for r in page["events"]] == [2, 1]
    assert (await s.client.get("/events/rejected", token=None))[0] == 401
    assert (await s.client.get("/events/rejected", token=TOKENS["jobs_ro"][0]))[0] == 403
    assert (await s.client.get("/events/rejected?limit=0", token=events_ro))[0] == 400

    # the valid one after them went through; every message was acked
    root = routing.derived_id(ingest.cause_id(5), "on_order")
    assert (await wait_root(s, root))["status"] == "succeeded"
    assert s.api.bus is not None
    info = await s.api.bus.js.consumer_info(subjects.INGEST, subjects.DISPATCHER_INGEST)
    assert info.num_pending == 0 and info.num_ack_pending == 0


async def test_a_redelivered_message_decides_the_same_events(make_config: Any, start_stack: Any) -> None:
    s = await start_stack(make_config(pipelines=PIPES))
    nc = await publisher(s)
    try:
        body = orjson.dumps({"type": "order.created", "payload": {"id": 7}, "dedupe_key": "order-7"})
        ack = await nc.jetstream().publish("ingest.order.created", body)
    finally:
        await nc.close()
    root = routing.derived_id(ingest.cause_id(ack.seq), "on_order")
    await wait_root(s, root)
    assert s.api.bus is not None and s.dispatcher.runs is not None
    consumer = ingest.IngestConsumer(s.api.bus, lambda: s.dispatcher.runs, source="test")
    again = await consumer.decide("ingest.order.created", body, ack.seq)
    assert again[0][1].id == f"ingest:{ack.seq}:accepted"
    assert any(env.id == f"{root}:queued" for _, env in again)
    await s.api.bus.publish_all(again)  # a second publish of the same ids is dropped by JetStream
    history = await s.api.bus.history(subjects.EVENTS, subjects.job_events(root))
    assert [env.type for _, env in history].count("job.queued") == 1

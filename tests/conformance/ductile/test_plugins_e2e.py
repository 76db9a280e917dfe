"""Ductile plugin behaviour end to end through HTTP, on the real stack: the expanded input_schema in
/plugin/{p}, the OpenAPI document and payload validation; a plugin lacking a required config key
refused at load (in /healthz for admins) while the others run; the codec's non-blank result;
emitted events carrying source/timestamp/event_id into the next job's request; fact_outputs with
mirror_object replacing the state the plugin sees next time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.dispatcher import routing
from tests.conformance.ductile.support import FIXTURE_MANIFESTS, ROOTS
from tests.support.infra import wait_until
from tests.support.stack import Stack

EXPANDED = {"type": "object", "properties": {"reply": {"type": "object"}, "note": {"type": "string"}}}


async def stack(make_config: Any, start_stack: Any, **kw: Any) -> Stack:
    plugins = {
        "echo": {},
        "mimic": {},
        "needs_config": {"config": {"endpoint": "http://127.0.0.1:9"}},
        **kw.pop("plugins", {}),
    }
    return await start_stack(make_config(plugin_roots=kw.pop("roots", ROOTS), plugins=plugins, **kw))


async def test_compact_input_schema_is_expanded_in_discovery_openapi_and_validation(
    make_config: Any, start_stack: Any
) -> None:
    s = await stack(make_config, start_stack)
    assert s.client is not None
    status, body = await s.client.get("/plugin/mimic")
    assert status == 200
    reply = {c["name"]: c for c in body["commands"]}["reply"]
    assert reply["input_schema"] == EXPANDED
    status, doc = await s.client.get("/plugin/mimic/openapi.json")
    assert status == 200
    schema = doc["paths"]["/plugin/mimic/reply"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert EXPANDED in (schema["properties"]["payload"], *schema["properties"]["payload"].get("anyOf", []))
    # validation uses the expanded form: `reply` must be an object (the compact map validated nothing)
    status, body = await s.client.post("/plugin/mimic/reply", json={"payload": {"reply": "not an object"}})
    assert status == 400 and body["error"] == "payload does not match the input_schema of mimic.reply", body
    assert any("reply" in v for v in body["violations"])


async def test_fixture_plugins_are_served_with_expanded_schemas(make_config: Any, start_stack: Any) -> None:
    s = await stack(
        make_config,
        start_stack,
        roots=[*ROOTS, str(FIXTURE_MANIFESTS)],
        plugins={
            "sqlite_change": {"config": {"db_path": "/tmp/d.db", "query": "select 1", "event_type": "sqlite.changed"}}
        },
    )
    assert s.client is not None
    status, body = await s.client.get("/healthz")
    assert status == 200 and "plugin_errors" not in body, body
    status, listing = await s.client.get("/plugins")
    assert {"birda", "discord_notify", "fabric", "jina-reader", "sqlite_change"} <= {
        p["name"] for p in listing["plugins"]
    }
    status, birda = await s.client.get("/plugin/birda")
    handle = {c["name"]: c for c in birda["commands"]}["handle"]
    assert handle["input_schema"]["properties"]["week"] == {"type": "integer"}
    assert handle["values"]["consume"][0] == "payload.wav_path"
    status, _ = await s.client.post("/plugin/birda/handle", json={"payload": {"week": "soon"}})
    assert status == 400


async def test_missing_required_config_is_refused_at_load_and_harms_nothing_else(
    make_config: Any, start_stack: Any
) -> None:
    s = await stack(make_config, start_stack, plugins={"needs_config": {"config": {"timeout": 3}}})
    assert s.client is not None
    status, body = await s.client.get("/healthz", token=None)
    assert status == 200 and body["plugins_broken"] == 1 and "plugin_errors" not in body
    status, body = await s.client.get("/healthz")
    (error,) = body["plugin_errors"]
    assert Path(error["path"]).parent.name == "needs_config"
    assert "needs_config" in error["error"] and "endpoint" in error["error"], error
    status, body = await s.client.post("/plugin/needs_config/poll", json={})
    assert status in (400, 404) and "needs_config" in body["error"]
    job_id = await s.client.submit("mimic", "handle", {})
    assert (await s.client.wait_job(job_id))["status"] == "succeeded"


async def test_ok_reply_without_a_result_message_fails_the_job(make_config: Any, start_stack: Any) -> None:
    s = await stack(make_config, start_stack, plugins={"mimic": {"retry": {"max_attempts": 1}}})
    assert s.client is not None
    job_id = await s.client.submit("mimic", "reply", {"reply": {"status": "ok", "result": "  "}})
    job = await s.client.wait_job(job_id)
    assert job["status"] == "dead", job
    assert "response has status=ok but no result message" in str(job.get("last_error")), job
    job_id = await s.client.submit("mimic", "reply", {"reply": {"status": "ok", "result": "fine"}})
    assert (await s.client.wait_job(job_id))["status"] == "succeeded"


async def test_emitted_events_carry_source_timestamp_and_event_id(make_config: Any, start_stack: Any) -> None:
    pipes = [{"name": "react", "on": "mimic.ping", "steps": [{"id": "echo_back", "uses": "mimic"}]}]
    s = await stack(make_config, start_stack, pipelines=pipes)
    assert s.client is not None
    job_id = await s.client.submit(
        "mimic", "emit", {"events": [{"type": "mimic.ping", "payload": {"n": 1}, "dedupe_key": "ping-1"}]}
    )
    job = await s.client.wait_job(job_id)
    assert job["status"] == "succeeded", job
    # the stored result is the plugin's reply as written (Ductile stores raw stdout); the event log's
    # record of the emitted event carries what core added
    assert job["result"]["events"] == [{"type": "mimic.ping", "payload": {"n": 1}, "dedupe_key": "ping-1"}]
    assert s.api.bus is not None
    (_, logged), *_ = await s.api.bus.history("EVENTS", "evt.plugin.mimic.emitted")
    emitted = logged.data
    assert emitted["source"] == "mimic" and emitted["event_id"] and emitted["timestamp"], emitted
    root = routing.derived_id(f"{job_id}:0", "react")
    child = routing.derived_id(root, 0, "react", "echo_back")
    done = await s.client.wait_job(child, may_not_exist_yet=True)
    assert done["status"] == "succeeded", done
    seen = done["result"]["result"]["seen"]["event"]
    assert seen["type"] == "mimic.ping" and seen["payload"]["n"] == 1
    assert {k: seen.get(k) for k in ("source", "timestamp", "event_id", "dedupe_key")} == {
        "source": "mimic",
        "timestamp": emitted["timestamp"],
        "event_id": emitted["event_id"],
        "dedupe_key": "ping-1",
    }


async def test_fact_outputs_mirror_object_replaces_the_state(make_config: Any, start_stack: Any) -> None:
    s = await stack(make_config, start_stack)
    assert s.client is not None
    first = await s.client.submit("mimic", "merge", {"snapshot": {"kept": True, "cursor": "a"}})
    assert (await s.client.wait_job(first))["status"] == "succeeded"
    second = await s.client.submit("mimic", "snapshot", {"snapshot": {"cursor": "b"}})
    job = await s.client.wait_job(second)
    assert job["result"]["result"]["seen"]["state"] == {"kept": True, "cursor": "a"}  # merged before
    third = await s.client.submit("mimic", "merge", {"snapshot": {}})
    job = await s.client.wait_job(third)
    # the fact command's state_updates became the whole state (mirror_object), not merged into it
    assert job["result"]["result"]["seen"]["state"] == {"cursor": "b"}, job
    assert s.api.bus is not None

    async def facts() -> Any:
        found = await s.api.bus.history("EVENTS", "evt.plugin.mimic.fact_recorded")  # type: ignore[union-attr]
        return found or None

    (_, fact), *_ = await wait_until(facts, timeout_s=10, what="the fact event")
    assert fact.data["fact_type"] == "mimic.snapshot" and fact.data["fact"] == {"cursor": "b"}
    assert fact.job_id == second

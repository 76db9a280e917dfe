"""Ductile's response shapes where our reference (shared/spec/ductile-api.md) is silent, over HTTP
as curl would send it: one test per behaviour row of shared/spec/ductile-conformance.md that
Headrace answered differently (the section of the doc is named in each test)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import asyncpg
import orjson

from tests.support.infra import wait_until
from tests.support.stack import ADMIN, TOKENS, Client, Stack


async def settle(hr: Stack, client: Client, job_ids: list[str]) -> list[dict[str, Any]]:
    """Every job final and the projection caught up with the event log."""
    done = [await client.wait_job(job_id) for job_id in job_ids]
    assert hr.api.bus is not None
    await hr.projector.wait_for(await hr.api.bus.stream_last_seq("EVENTS"))
    return done


# --- §2.9 GET /jobs ---------------------------------------------------------------------------------


async def test_jobs_limit_above_200_is_400(client: Client) -> None:
    assert (await client.get("/jobs?limit=200"))[0] == 200
    status, body = await client.get("/jobs?limit=201")
    assert status == 400 and body["parameter"] == "limit" and "200" in body["error"], body


async def test_jobs_status_filter_ignores_case_and_spaces(hr: Stack, client: Client) -> None:
    job_id = await client.submit("echo", "poll", {"message": "case"})
    await settle(hr, client, [job_id])
    for raw in ("SUCCEEDED", "Succeeded", "%20succeeded%20", "OK"):
        status, body = await client.get(f"/jobs?status={raw}")
        assert status == 200, (raw, body)
        assert [j["job_id"] for j in body["jobs"]] == [job_id], raw
    status, body = await client.get("/job-logs?status=SUCCEEDED")
    assert status == 200 and [r["job_id"] for r in body["logs"]] == [job_id]


# --- §2.10 GET /job-logs ------------------------------------------------------------------------------


async def test_job_logs_query_is_a_substring(hr: Stack, client: Client) -> None:
    hit = await client.submit("echo", "poll", {"message": "cpu over threshold"})
    miss = await client.submit("echo", "poll", {"message": "all quiet"})
    await settle(hr, client, [hit, miss])
    for query in ("hreshold", "HRESH", "over thr"):
        status, body = await client.get(f"/job-logs?query={query}")
        assert status == 200, body
        assert [r["job_id"] for r in body["logs"]] == [hit], query
    # LIKE's wildcards are literal text in a query
    status, body = await client.get("/job-logs?query=%25")
    assert status == 200 and body["logs"] == []
    status, body = await client.get("/job-logs?query=c_u")
    assert status == 200 and body["logs"] == []


# --- §2.8 GET /job/{id}/tree ---------------------------------------------------------------------------


async def test_tree_of_an_unknown_job_is_an_empty_list(client: Client) -> None:
    status, body = await client.get("/job/0190b0c8-0000-7000-8000-000000000000/tree")
    assert status == 200 and body == []


# --- §2.2 GET /healthz ---------------------------------------------------------------------------------


async def test_healthz_has_plugins_circuit_open_and_posture(client: Client) -> None:
    status, body = await client.get("/healthz", token=None)
    assert status == 200, body
    assert body["plugins_circuit_open"] == 0 and body["posture"] == "gateway"
    assert "config_path" not in body and "binary_path" not in body  # still no paths without an admin token


async def test_healthz_counts_a_plugin_whose_circuit_is_open(hr: Stack, client: Client) -> None:
    assert hr.api.bus is not None
    kv = await hr.api.bus.kv("breakers")
    await kv.put("echo.poll", orjson.dumps({"failures": 3, "state": "open", "opened_at": 1.0}))
    await kv.put("echo.handle", orjson.dumps({"failures": 3, "state": "open", "opened_at": 1.0}))
    await kv.put("echo_py.poll", orjson.dumps({"failures": 1, "state": "closed", "opened_at": None}))
    status, body = await client.get("/healthz", token=None)
    assert status == 200 and body["plugins_circuit_open"] == 1, body


# --- §2.12 / §2.13 analytics --------------------------------------------------------------------------------


async def test_analytics_summary_has_window_and_stats(hr: Stack, client: Client) -> None:
    ids = [await client.submit("echo", "poll", {"message": str(i)}) for i in range(2)]
    await settle(hr, client, ids)
    status, body = await client.get("/analytics/summary")
    assert status == 200, body
    assert body["window"] == "24h" and body["stats"] == {"succeeded": 2}  # zero statuses left out
    assert body["window_hours"] == 24 and body["by_status"]["succeeded"] == 2  # ours stay


async def test_analytics_queue_has_ductile_counts(hr: Stack, client: Client) -> None:
    status, body = await client.get("/analytics/queue")
    assert status == 200, body
    assert body["queue_depth"] == 0 and body["running_count"] == 0
    assert body["delayed_count"] == 0 and body["dead_count"] == 0
    assert "active_jobs" not in body and "plugin_lanes" not in body  # left out when empty
    assert body["in_flight"] == 0 and "runners" in body  # ours stay


async def test_analytics_queue_lists_running_jobs(make_config: Any, start_stack: Any) -> None:
    hr = await start_stack(make_config(plugins={"sleeper": {"parallelism": 1}}))
    job_id = await hr.client.submit("sleeper", "poll", {"seconds": 20})
    await hr.client.wait_job(job_id, {"running"})

    async def listed() -> dict[str, Any] | None:
        status, body = await hr.client.get("/analytics/queue")
        assert status == 200, body
        return body if body.get("running_count") == 1 else None

    body = await wait_until(listed, timeout_s=15, what="the running job in /analytics/queue")
    (active,) = body["active_jobs"]
    assert active["job_id"] == job_id and active["plugin"] == "sleeper" and active["command"] == "poll"
    assert active["started_at"].endswith("Z")
    assert body["plugin_lanes"] == [{"plugin": "sleeper", "active_count": 1}]
    await hr.client.post(f"/job/{job_id}/cancel", json={})


# --- §2.11 GET /scheduler/jobs ------------------------------------------------------------------------------


async def test_scheduler_jobs_have_ductile_keys(make_config: Any, start_stack: Any) -> None:
    hr = await start_stack(
        make_config(plugins={"echo": {"schedules": [{"id": "hourly", "every": "1h", "command": "poll"}]}})
    )
    status, body = await hr.client.get("/scheduler/jobs")
    assert status == 200, body
    (entry,) = body["jobs"]
    assert entry["plugin"] == "echo" and entry["schedule_id"] == "hourly" and entry["command"] == "poll"
    assert entry["mode"] == "every" and entry["status"] == "scheduled"
    assert entry["next_run_at"] == entry["next_fire_at"] and entry["next_run_at"].endswith("Z")


# --- §2.17 GET /config/view -------------------------------------------------------------------------------------


async def test_config_view_compiled_routes_are_ductiles(make_config: Any, start_stack: Any) -> None:
    pipelines = [
        {
            "name": "flow",
            "on": "thing.happened",
            "steps": [{"id": "one", "uses": "echo_py"}, {"id": "two", "uses": "echo"}],
        }
    ]
    hr = await start_stack(make_config(pipelines=pipelines))
    status, body = await hr.client.get("/config/view")
    assert status == 200, body
    routes = body["compiled_routes"]["flow"]
    entry = next(r for r in routes if "trigger" in r["source"])
    assert entry["source"] == {"pipeline": "flow", "trigger": "thing.happened"}
    assert entry["destination"] == {"kind": "uses", "step_id": "one", "plugin": "echo_py", "command": "handle"}
    step = next(r for r in routes if r["source"].get("step_id") == "one")
    assert step["destination"]["step_id"] == "two" and step["destination"]["plugin"] == "echo"
    assert len({r["id"] for r in routes}) == len(routes) == 2
    assert body["compiled_pipelines"]["flow"]["on"] == "thing.happened"  # ours, under its own key


# --- §4 GET /events ------------------------------------------------------------------------------------------------


async def _read_events(resp: aiohttp.ClientResponse, want: int, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    name, data = None, None
    while len(out) < want:
        line = (await resp.content.readline()).decode().rstrip("\r\n")
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data = orjson.loads(line[5:].strip())
        elif line == "" and name is not None and data is not None:
            if data.get("job_id") == job_id and name != "job.log":
                out.append((name, data))
            name, data = None, None
    return out


async def _stream(hr: Stack, query: str = "") -> tuple[aiohttp.ClientSession, aiohttp.ClientResponse]:
    session = aiohttp.ClientSession()
    resp = await session.get(f"{hr.url}/events{query}", headers={"Authorization": f"Bearer {ADMIN}"})
    assert resp.status == 200
    return session, resp


async def test_events_carry_ductile_names_and_flat_data(hr: Stack, client: Client) -> None:
    session, resp = await _stream(hr)
    try:
        job_id = await client.submit("echo", "poll", {"message": "sse"})
        got = await asyncio.wait_for(_read_events(resp, 3, job_id), timeout=15)
    finally:
        resp.close()
        await session.close()
    assert [name for name, _ in got] == ["job.enqueued", "job.started", "job.completed"]
    enqueued, started, completed = (data for _, data in got)
    assert enqueued["plugin"] == "echo" and enqueued["command"] == "poll"
    assert enqueued["submitted_by"] == "api" and enqueued["direct"] is True and enqueued["at"].endswith("Z")
    assert started["plugin"] == "echo" and started["attempt"] == 1 and started["submitted_by"] == "api"
    assert completed["status"] == "succeeded" and completed["plugin"] == "echo"
    assert isinstance(completed["duration_ms"], int | float)
    assert all("data" not in d and "type" not in d for _, d in got)  # flat, not envelopes


async def test_events_type_filter_names_ductiles_event(hr: Stack, client: Client) -> None:
    session, resp = await _stream(hr, "?type=job.completed")
    try:
        job_id = await client.submit("echo", "poll", {"message": "typed"})
        ((name, data),) = await asyncio.wait_for(_read_events(resp, 1, job_id), timeout=15)
    finally:
        resp.close()
        await session.close()
    assert name == "job.completed" and data["status"] == "succeeded"


async def test_events_format_log_keeps_the_envelopes(hr: Stack, client: Client) -> None:
    session, resp = await _stream(hr, "?format=log")
    try:
        job_id = await client.submit("echo", "poll", {"message": "log"})
        got = await asyncio.wait_for(_read_events(resp, 3, job_id), timeout=15)
    finally:
        resp.close()
        await session.close()
    assert [name for name, _ in got] == ["job.queued", "job.started", "job.succeeded"]
    assert all(d["type"] == name and "data" in d and d["id"] for name, d in got)
    status, body = await client.get("/events?format=xml", token=TOKENS["events_ro"][0])
    assert status == 400 and body["parameter"] == "format"


async def test_job_logs_substring_query_uses_the_trigram_index(database_url: str) -> None:
    """The substring match stays an index scan at a million rows only while the query's expression is
    the one migrations/011 indexes (listing.SUBSTRING_MATCH; measured: 20-205 ms per page at 1M attempts
    without it)."""
    from services.api import listing
    from services.core import db

    conn = await asyncpg.connect(database_url, server_settings={"search_path": db.SCHEMA})
    try:
        await conn.execute("SET enable_seqscan = off")
        filters = listing.Filters()
        filters.text_search("hreshold")
        plan = await conn.fetch(f"EXPLAIN SELECT log_id FROM job_logs {filters.where}", *filters.args)
    finally:
        await conn.close()
    assert any("job_logs_substring_idx" in row[0] for row in plan), [row[0] for row in plan]


async def test_events_replay_recent_history_on_connect(hr: Stack, client: Client) -> None:
    """Ductile's hub sends what is still in its ring buffer to a new client before going live."""
    job_id = await client.submit("echo", "poll", {"message": "before"})
    await client.wait_job(job_id)
    session, resp = await _stream(hr)
    try:
        got = await asyncio.wait_for(_read_events(resp, 3, job_id), timeout=15)
    finally:
        resp.close()
        await session.close()
    assert [name for name, _ in got] == ["job.enqueued", "job.started", "job.completed"]

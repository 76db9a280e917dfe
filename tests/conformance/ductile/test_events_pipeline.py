"""GET /events for a pipeline run (shared/spec/ductile-conformance.md §4): `pipeline.enqueued` for the
run, `router.enqueued` for each routed step with Ductile's keys, `job.completed` at the end."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson

from tests.support.stack import TOKENS, Stack


async def _collect(resp: aiohttp.ClientResponse, done: Any) -> list[tuple[str, dict[str, Any]]]:
    seen: list[tuple[str, dict[str, Any]]] = []
    name, data = None, None
    while not done(seen):
        line = (await resp.content.readline()).decode().rstrip("\r\n")
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data = orjson.loads(line[5:].strip())
        elif line == "" and name is not None and data is not None:
            seen.append((name, data))
            name, data = None, None
    return seen


async def test_a_pipeline_run_streams_pipeline_and_router_enqueued(make_config: Any, start_stack: Any) -> None:
    pipes = [
        {"name": "flow", "on": "flow.go", "steps": [{"id": "one", "uses": "echo_py"}, {"id": "two", "uses": "echo"}]}
    ]
    hr: Stack = await start_stack(make_config(plugins={"echo": {}, "echo_py": {}}, pipelines=pipes))
    assert hr.client is not None
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{hr.url}/events?token={TOKENS['events_ro'][0]}") as resp,
    ):
        assert resp.status == 200
        status, body = await hr.client.post("/pipeline/flow", json={"payload": {"message": "sse"}})
        assert status == 202
        root = body["job_id"]

        def finished(seen: list[tuple[str, dict[str, Any]]]) -> bool:
            steps = [d for n, d in seen if n == "router.enqueued" and d.get("pipeline") == "flow"]
            return len(steps) == 2 and any(n == "pipeline.enqueued" and d["job_id"] == root for n, d in seen)

        seen = await asyncio.wait_for(_collect(resp, finished), timeout=20)
    (run,) = [d for n, d in seen if n == "pipeline.enqueued" and d["job_id"] == root]
    assert run["pipeline"] == "flow" and run["job_ids"] == [root] and run["job_count"] == 1
    assert run["submitted_by"] == "api" and run["at"].endswith("Z")
    steps = [d for n, d in seen if n == "router.enqueued" and d.get("pipeline") == "flow"]
    assert [s["step_id"] for s in steps] == ["one", "two"]
    assert [s["plugin"] for s in steps] == ["echo_py", "echo"] and all(s["command"] == "handle" for s in steps)
    assert steps[0]["parent_job_id"] and steps[1]["parent_job_id"] == steps[0]["job_id"]
    assert all(s["event_context_id"] for s in steps)


async def test_a_retry_streams_job_retry_scheduled_with_ductiles_keys(
    make_config: Any, start_stack: Any, tmp_path: Any
) -> None:
    """§4: `job.retry_scheduled` carries attempt, max_attempts, max_retries, retry_count,
    retry_policy_owner, plugin_retry_field, backoff_ms, backoff_schedule, next_retry_at, reason."""
    plugins = {"flaky": {"retry": {"max_attempts": 3, "backoff_base": "100ms"}}}
    hr: Stack = await start_stack(make_config(plugins=plugins))
    assert hr.client is not None
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{hr.url}/events?token={TOKENS['events_ro'][0]}&type=job.retry_scheduled") as resp,
    ):
        assert resp.status == 200
        job_id = await hr.client.submit("flaky", "poll", {"counter_file": str(tmp_path / "n"), "succeed_on": 2})
        seen = await asyncio.wait_for(
            _collect(resp, lambda seen: any(d.get("job_id") == job_id for _, d in seen)), timeout=20
        )
    (retry,) = [d for n, d in seen if d.get("job_id") == job_id]
    assert retry["attempt"] == 2 and retry["retry_count"] == 1
    assert retry["max_attempts"] == 3 and retry["max_retries"] == 2
    assert retry["retry_policy_owner"] == "core" and retry["plugin_retry_field"] == "v2_boundary_compatibility_signal"
    assert retry["backoff_schedule"] == [100, 200] and 100 <= retry["backoff_ms"] <= 125
    assert retry["next_retry_at"].endswith("Z") and retry["reason"]
    assert (await hr.client.wait_job(job_id))["status"] == "succeeded"

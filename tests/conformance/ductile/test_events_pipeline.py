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

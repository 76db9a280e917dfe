"""Ductile's HTTP conventions (shared/spec/ductile-conformance.md §1, §1.2, §2.1, §2.3, §2.5, §2.7,
§2.8, §2.10, §3.1) over real HTTP, with the conflict rule: our reference
(shared/spec/ductile-api.md) wins where it speaks, Ductile's code where it is silent; input Ductile
accepts is accepted, output keeps Ductile's keys. Each test names its rows; ROWS.md maps them."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import orjson
import pytest

from tests.support.stack import ADMIN, TOKENS, Client, Stack

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


async def raw(
    url: str, method: str, path: str, *, headers: dict[str, str] | None = None, data: bytes | None = None
) -> tuple[int, str, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url + path, headers=headers or {}, data=data) as resp,
    ):
        return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


# --- §1 replies -----------------------------------------------------------------------------------------


async def test_every_reply_is_json_and_every_error_has_an_error_string(hr: Stack) -> None:
    """§1: JSON replies, `{"error": "<message>"}` on every handler error (ours adds `code` and details)."""
    cases = [
        ("GET", "/", None, 200),
        ("GET", "/healthz", None, 200),
        ("GET", "/jobs", None, 401),
        ("GET", "/jobs", "Bearer nope-not-a-token", 401),
        ("GET", "/plugin/ghost", f"Bearer {ADMIN}", 404),
        ("GET", "/job/ghost", f"Bearer {ADMIN}", 404),
        ("GET", "/jobs?limit=0", f"Bearer {ADMIN}", 400),
    ]
    for method, path, header, expected in cases:
        status, ctype, body = await raw(hr.url, method, path, headers={"Authorization": header} if header else None)
        assert status == expected and ctype.startswith("application/json"), (path, status, ctype)
        parsed = orjson.loads(body)
        if status >= 400:
            assert isinstance(parsed["error"], str) and parsed["error"], (path, parsed)


async def test_unknown_paths_and_methods_are_json_not_chi_text(hr: Stack) -> None:
    """§1: Ductile answers chi's text/plain `404 page not found` and an empty 405; we keep the JSON
    guarantee for every 4xx (differs, documented)."""
    status, ctype, body = await raw(hr.url, "GET", "/no/such/route")
    assert status == 404 and ctype.startswith("application/json") and orjson.loads(body)["error"]
    status, ctype, body = await raw(hr.url, "DELETE", "/healthz")
    assert status == 405 and ctype.startswith("application/json") and orjson.loads(body)["error"]


async def test_times_are_rfc3339_utc(hr: Stack, client: Client) -> None:
    """§1: times are RFC 3339 in UTC (`Z`)."""
    job_id = await client.submit("echo", "poll", {"message": "t"})
    job = await client.wait_job(job_id)
    for key in ("created_at", "started_at", "completed_at"):
        assert RFC3339_UTC.match(job[key]), (key, job[key])
    await hr.caught_up()  # the job's answer comes from the event log; GET /jobs lists the read model
    status, body = await client.get("/jobs")
    assert status == 200 and RFC3339_UTC.match(body["jobs"][0]["created_at"])


# --- §1 request bodies ----------------------------------------------------------------------------------------


async def test_bodies_are_decoded_leniently(hr: Stack, client: Client) -> None:
    """§1: unknown keys are ignored and anything after the first JSON value is ignored (Go's decoder)."""
    for body, message in (
        (b'{"payload":{"message":"a"},"extra":1}', "a"),
        (b'{"payload":{"message":"b"}} trailing text', "b"),
        (b'  {"payload":{"message":"c"}}\n{"payload":{"message":"other"}}', "c"),
    ):
        status, out = await client.post("/plugin/echo/poll", data=body, headers={"Content-Type": "application/json"})
        assert status == 202, (body, out)
        done = await client.wait_job(out["job_id"])
        assert done["result"]["result"] == f"Echoed: {message}", done
    status, out = await client.post(
        "/plugin/echo/poll", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert status == 400 and out["error"]


async def test_an_empty_body_runs_with_an_empty_payload(client: Client) -> None:
    """§2.5: the body is optional."""
    status, out = await client.post("/plugin/echo/poll")
    assert status == 202 and out["status"] == "queued", out
    status, out = await client.post("/plugin/echo/poll", data=b"", headers={"Content-Length": "0"})
    assert status == 202, out


# --- §1.2 authentication -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "message_has"),
    [
        (None, "missing"),  # no usable token
        ("Basic dXNlcjpwdw==", "missing"),  # Ductile: invalid Authorization header format (401 too)
        ("Bearer ", "missing"),
        ("Bearer not-a-configured-token", "invalid"),
    ],
)
async def test_auth_failures_are_401_json(hr: Stack, header: str | None, message_has: str) -> None:
    status, ctype, body = await raw(hr.url, "GET", "/jobs", headers={"Authorization": header} if header else None)
    assert status == 401 and ctype.startswith("application/json")
    assert message_has in orjson.loads(body)["error"]


async def test_the_bearer_value_is_trimmed(hr: Stack) -> None:
    """§1.2: the rest after `Bearer ` is trimmed."""
    status, _, _ = await raw(hr.url, "GET", "/jobs", headers={"Authorization": f"Bearer   {ADMIN}  "})
    assert status == 200


async def test_query_token_only_on_events(hr: Stack) -> None:
    """§1.2/§4: `?token=` is accepted by /events only."""
    status, _, _ = await raw(hr.url, "GET", f"/jobs?token={ADMIN}")
    assert status == 401
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{hr.url}/events?token={TOKENS['events_ro'][0]}") as resp:
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
        async with session.get(f"{hr.url}/events?token=wrong-token-value") as resp:
            assert resp.status == 401
        async with session.get(f"{hr.url}/events") as resp:
            assert resp.status == 401


async def test_auth_runs_before_the_route_looks_anything_up(hr: Stack) -> None:
    """§1.2: an unknown plugin without a token is 401, not 404; a wrong scope is 403 before 404."""
    status, _, _ = await raw(hr.url, "POST", "/plugin/ghost/poll")
    assert status == 401
    status, _, body = await raw(
        hr.url, "GET", "/job/ghost", headers={"Authorization": f"Bearer {TOKENS['plugin_rw'][0]}"}
    )
    assert status == 403 and orjson.loads(body)["error"]


# --- §2.1 GET / and §2.3 discovery ---------------------------------------------------------------------------


async def test_root_has_ductiles_keys(client: Client) -> None:
    status, body = await client.get("/", token=None)
    assert status == 200 and isinstance(body["uptime_seconds"], int)
    assert isinstance(body["name"], str) and isinstance(body["description"], str)
    assert body["discovery"] == {
        "health": "/healthz",
        "skills": "/skills",
        "plugins": "/plugins",
        "openapi": "/openapi.json",
        "ai_plugin": "/.well-known/ai-plugin.json",
    }


async def test_discovery_is_open_as_the_reference_says(client: Client) -> None:
    """§2.3 / §7.1: Ductile's code wants a token; the reference says no auth, and it wins."""
    for path in ("/plugins", "/skills", "/openapi.json", "/.well-known/ai-plugin.json", "/plugin/echo/openapi.json"):
        status, _ = await client.get(path, token=None)
        assert status == 200, path
    status, body = await client.get("/plugin/ghost/openapi.json", token=None)
    assert status == 404 and body["error"]


async def test_plugins_sorted_with_commands_in_manifest_order(client: Client) -> None:
    status, body = await client.get("/plugins", token=None)
    assert status == 200
    names = [p["name"] for p in body["plugins"]]
    assert names == sorted(names)
    echo = next(p for p in body["plugins"] if p["name"] == "echo")
    assert echo["commands"] == ["poll", "handle", "health"]  # plugins/echo/manifest.yaml order


async def test_skills_plugins_then_commands_by_name_then_pipelines(make_config: Any, start_stack: Any) -> None:
    pipelines = [
        {"name": "zeta", "on": "z.happened", "steps": [{"uses": "echo"}]},
        {
            "name": "alpha",
            "on-hook": "job.completed",
            "steps": [{"uses": "echo"}],
            "execution_mode": "synchronous",
            "timeout": "90s",
        },
    ]
    hr: Stack = await start_stack(make_config(pipelines=pipelines))
    status, body = await hr.client.get("/skills", token=None)  # type: ignore[union-attr]
    assert status == 200
    plugin_skills = [s for s in body["skills"] if s["kind"] == "plugin"]
    echo = [s["command"] for s in plugin_skills if s["plugin"] == "echo"]
    assert echo == ["handle", "health", "poll"]
    assert [s["plugin"] for s in plugin_skills] == sorted(s["plugin"] for s in plugin_skills)
    assert next(s for s in plugin_skills if s["name"] == "plugin.echo.health")["tier"] == "READ"
    pipes = [s for s in body["skills"] if s["kind"] == "pipeline"]
    assert [s["pipeline"] for s in pipes] == ["alpha", "zeta"] and body["skills"][-2:] == pipes
    assert pipes[0]["trigger"] == "job.completed" and pipes[0]["execution_mode"] == "synchronous"
    assert pipes[0]["timeout_secs"] == 90
    assert pipes[1] == {
        "name": "pipeline.zeta",
        "kind": "pipeline",
        "endpoint": "/pipeline/zeta",
        "pipeline": "zeta",
        "trigger": "z.happened",
        "execution_mode": "asynchronous",
        "timeout_secs": 30,
    }  # the reference's default mode; Ductile's compiled 30 s


# --- §2.5 POST /plugin/{plugin}/{command} ------------------------------------------------------------------


async def test_direct_execution_checks_in_order(client: Client) -> None:
    """§2.5: unknown plugin / command (the reference's 404, §7.4), a write command with a read-only
    scope (403), bad JSON (400), a handle payload that is not an object (400); 202 with Ductile's keys."""
    status, body = await client.post("/plugin/ghost/poll", json={})
    assert status == 404 and body["error"]
    status, body = await client.post("/plugin/echo/ghost", json={})
    assert status == 404 and body["error"]
    status, body = await client.post("/plugin/echo/poll", json={}, token=TOKENS["plugin_ro"][0])
    assert status == 403 and body["error"]
    status, body = await client.post("/plugin/echo/poll", data=b"[", headers={"Content-Type": "application/json"})
    assert status == 400 and body["error"]
    status, body = await client.post("/plugin/echo/handle", json={"payload": [1, 2]})
    assert status == 400 and body["error"]
    status, body = await client.post("/plugin/echo/handle", json={"payload": None})
    assert status == 202, body
    status, body = await client.post("/plugin/echo/poll", json={"payload": {"message": "x"}})
    assert status == 202 and set(body) == {"job_id", "status", "plugin", "command"}
    assert body["status"] == "queued" and body["plugin"] == "echo" and body["command"] == "poll"


async def test_plugin_ro_runs_read_commands_as_the_reference_says(client: Client) -> None:
    """§2.5 step 3 / §7.3: Ductile wants plugin:invoke:ro; the reference lets plugin:ro run read commands."""
    status, body = await client.post("/plugin/echo/health", json={}, token=TOKENS["plugin_ro"][0])
    assert status == 202, body


async def test_handle_gets_an_api_trigger_event(hr: Stack, client: Client) -> None:
    """§2.5 step 5: a `handle` payload is wrapped in an `api.trigger` event."""
    from services.core import subjects

    job_id = await client.submit("echo", "handle", {"k": "v"})
    await client.wait_job(job_id)
    assert hr.api.bus is not None
    queued = await hr.api.bus.last_message(subjects.EVENTS, subjects.job_event(job_id, "queued"))
    assert queued is not None and queued[1].data["event"]["type"] == "api.trigger"
    assert queued[1].data["event"]["payload"] == {"k": "v"}
    assert queued[1].data["submitted_by"] == "api"


# --- §2.7 / §2.8 / §2.10 / §3.1 results scope ----------------------------------------------------------------

NARROW = {
    "status": ("narrow-status-only-0", ["jobs:status:ro"]),
    "tree": ("narrow-tree-only-00", ["jobs:tree:ro"]),
    "logs": ("narrow-logs-only-00", ["jobs:logs:ro"]),
    "results": ("narrow-status-results", ["jobs:status:ro", "jobs:tree:ro", "jobs:logs:ro", "jobs:result:ro"]),
}


async def test_results_are_hidden_without_a_results_scope(make_config: Any, start_stack: Any) -> None:
    """§3.1 canSeeJobResults: `result`, `last_error`, `stderr` only with jobs:result:ro (jobs:ro, jobs:rw, *)."""
    from tests.support import stack as stack_mod

    doc = stack_mod.config_doc()
    tokens = [*doc["api"]["auth"]["tokens"], *({"name": k, "token": t, "scopes": s} for k, (t, s) in NARROW.items())]
    hr: Stack = await start_stack(make_config(api={**doc["api"], "auth": {"tokens": tokens}}))
    client = hr.client
    assert client is not None
    job_id = await client.submit("echo", "poll", {"message": "secret output"})
    await client.wait_job(job_id)
    await hr.caught_up()

    status, job = await client.get(f"/job/{job_id}", token=NARROW["status"][0])
    assert status == 200 and job["status"] == "succeeded" and "result" not in job and "last_error" not in job
    status, job = await client.get(f"/job/{job_id}", token=NARROW["results"][0])
    assert status == 200 and job["result"]["result"] == "Echoed: secret output"

    status, tree = await client.get(f"/job/{job_id}/tree", token=NARROW["tree"][0])
    assert status == 200 and tree and all("result" not in n and "last_error" not in n for n in tree)
    status, tree = await client.get(f"/job/{job_id}/tree", token=NARROW["results"][0])
    assert status == 200 and "result" in tree[0]

    status, logs = await client.get("/job-logs?include_result=true", token=NARROW["logs"][0])
    assert status == 200 and logs["logs"]
    assert all(not {"result", "last_error", "stderr"} & set(r) for r in logs["logs"])
    status, logs = await client.get("/job-logs?include_result=TRUE", token=NARROW["results"][0])
    assert status == 200 and logs["logs"][0]["result"]["result"] == "Echoed: secret output"
    status, job = await client.get(f"/job/{job_id}", token=TOKENS["jobs_ro"][0])  # jobs:ro implies results
    assert status == 200 and "result" in job


async def test_healthz_queue_depth_counts_running_jobs(make_config: Any, start_stack: Any) -> None:
    """§2.2: `/healthz` `queue_depth` counts queued **and** running jobs (Ductile's `Depth`)."""
    hr: Stack = await start_stack(make_config(plugins={"sleeper": {"parallelism": 1}}))
    assert hr.client is not None
    status, body = await hr.client.get("/healthz", token=None)
    assert status == 200 and body["queue_depth"] == 0
    job_id = await hr.client.submit("sleeper", "poll", {"seconds": 20})
    await hr.client.wait_job(job_id, {"running"})
    status, body = await hr.client.get("/healthz", token=None)
    assert status == 200 and body["queue_depth"] == 1, body
    assert isinstance(body["plugins_loaded"], int) and body["plugins_loaded"] >= 1
    await hr.client.post(f"/job/{job_id}/cancel")

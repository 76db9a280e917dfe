"""POST /pipeline/{pipeline} (shared/spec/ductile-conformance.md §2.6, §7.7-§7.9): Ductile's keys on
the async and sync replies, the exact timeout message the reference gives, `?async=true`, bad input
as 4xx, and the tree (the reference's synthetic `pipeline` root, which wins over Ductile's code)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.stack import Stack

PIPES = [
    {"name": "flow", "on": "flow.go", "steps": [{"id": "one", "uses": "echo_py"}, {"id": "two", "uses": "echo"}]},
    {
        "name": "sync",
        "execution_mode": "synchronous",
        "timeout": "20s",
        "steps": [{"id": "one", "uses": "echo_py"}, {"id": "two", "uses": "echo"}],
    },
    {
        "name": "slow",
        "execution_mode": "synchronous",
        "timeout": "1s",
        "steps": [{"uses": "napper.poll", "with": {"seconds": 3}}],
    },
]


@pytest.fixture
async def piped(make_config: Any, start_stack: Any) -> Stack:
    plugins = {"echo": {}, "echo_py": {}, "napper": {}}
    return await start_stack(make_config(plugins=plugins, pipelines=PIPES))


async def test_async_reply_has_ductiles_keys(piped: Stack) -> None:
    assert piped.client is not None
    status, body = await piped.client.post("/pipeline/flow", json={"payload": {"message": "go"}})
    assert status == 202, body
    assert body["status"] == "queued" and body["plugin"] == "pipeline" and body["command"] == "flow"
    done = await piped.client.wait_job(body["job_id"], {"succeeded", "failed", "dead"})
    assert done["status"] == "succeeded"
    await piped.caught_up()
    status, tree = await piped.client.get(f"/job/{body['job_id']}/tree")
    assert status == 200 and isinstance(tree, list)
    assert tree[0]["job_id"] == body["job_id"] and tree[0]["plugin"] == "pipeline"  # the reference's root
    assert {n["plugin"] for n in tree[1:]} == {"echo_py", "echo"}
    assert all(n["parent_job_id"] for n in tree[1:])


async def test_sync_reply_waits_and_async_true_forces_async(piped: Stack) -> None:
    assert piped.client is not None
    status, body = await piped.client.post("/pipeline/sync", json={"payload": {"message": "s"}})
    assert status == 200, body
    assert body["status"] == "succeeded" and isinstance(body["duration_ms"], int) and body["result"]
    assert body["tree"] and all({"job_id", "plugin", "command", "status"} <= set(n) for n in body["tree"])
    status, body = await piped.client.post("/pipeline/sync?async=true", json={"payload": {}})
    assert status == 202 and body["status"] == "queued" and body["command"] == "sync"


async def test_sync_timeout_is_202_with_the_references_message(piped: Stack) -> None:
    assert piped.client is not None
    status, body = await piped.client.post("/pipeline/slow", json={})
    assert status == 202, body
    assert body["status"] == "running" and body["timeout_exceeded"] is True
    assert body["message"] == "Pipeline still running after timeout."


async def test_bad_input_is_4xx(piped: Stack) -> None:
    assert piped.client is not None
    status, body = await piped.client.post("/pipeline/ghost", json={})
    assert status == 404 and body["error"]
    status, body = await piped.client.post("/pipeline/flow", data=b"{", headers={"Content-Type": "application/json"})
    assert status == 400 and body["error"]
    status, body = await piped.client.post("/pipeline/flow", json={"payload": "not an object"})
    assert status == 400 and body["error"]
    status, body = await piped.client.post("/pipeline/flow", json={"payload": {}}, token="test-plugin-ro-token")
    assert status == 403  # plugin:rw or *


async def test_the_next_step_sees_ductiles_upstream_keys(make_config: Any, start_stack: Any) -> None:
    """§3.4: a routed payload gets ductile_upstream_plugin/_pipeline/_step_id and the upstream `result`."""
    pipes = [
        {
            "name": "chain",
            "execution_mode": "synchronous",
            "timeout": "20s",
            "steps": [
                {"id": "first", "uses": "echo.poll", "with": {"message": "{payload.m}"}},
                {"id": "second", "uses": "echo_py"},
            ],
        }
    ]
    hr: Stack = await start_stack(make_config(plugins={"echo": {}, "echo_py": {}}, pipelines=pipes))
    assert hr.client is not None
    status, body = await hr.client.post("/pipeline/chain", json={"payload": {"m": "hi"}})
    assert status == 200 and body["status"] == "succeeded", body
    second = next(n for n in body["tree"] if n["plugin"] == "echo_py")
    seen = second["result"]["result"]["echo"]
    assert seen["ductile_upstream_plugin"] == "echo" and seen["ductile_upstream_pipeline"] == "chain"
    assert seen["ductile_upstream_step_id"] == "first" and seen["result"] == "Echoed: hi"

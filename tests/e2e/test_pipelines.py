"""Pipelines end to end through HTTP: with, baggage, split, call, step if, routing by emitted
events, on-hook, synchronous runs (success, timeout, fan-out 400, 429), max_depth, failures."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from services.api import pipelines as api_pipelines
from services.core import catalog, errors, pipelines
from services.dispatcher import routing
from tests.support.infra import wait_until
from tests.support.stack import REPO, TEST_PLUGINS, Client

PLUGINS = {"echo": {}, "echo_py": {}, "napper": {}, "flaky": {"retry": {"max_attempts": 1}}}

MAIN = [
    {
        "name": "main",
        "execution_mode": "synchronous",
        "timeout": "20s",
        "steps": [
            {
                "id": "first",
                "uses": "echo_py",
                "with": {"greeting": "Hello {payload.name}", "count": "{payload.count}"},
                "baggage": {"who.name": "payload.name"},
            },
            {
                "split": [
                    {"id": "left", "uses": "echo_py"},
                    {
                        "steps": [
                            {"id": "gate", "uses": "echo_py", "if": {"path": "payload.count", "op": "gte", "value": 5}},
                            {"id": "after_gate", "uses": "echo_py"},
                        ]
                    },
                ]
            },
            {"call": "tail"},
        ],
    },
    {"name": "tail", "steps": [{"id": "last", "uses": "echo_py", "with": {"who": "{context.who.name}"}}]},
]


async def run_sync(client: Client, name: str, payload: dict[str, Any], **kw: Any) -> tuple[int, Any]:
    return await client.post(f"/pipeline/{name}", json={"payload": payload}, **kw)


async def test_sync_pipeline_with_with_baggage_split_call_and_if(make_config: Any, start_stack: Any) -> None:
    s = await start_stack(make_config(plugins=PLUGINS, pipelines=MAIN))
    status, body = await run_sync(s.client, "main", {"name": "Ada", "count": 7})
    assert status == 200, body
    assert body["status"] == "succeeded" and body["duration_ms"] >= 0
    by_step: dict[str, list[dict[str, Any]]] = {}
    for node in body["tree"]:
        by_step.setdefault(node["step_id"], []).append(node)
    assert set(by_step) == {"first", "left", "gate", "after_gate", "last"}
    assert len(by_step["last"]) == 2  # one per exit of the split (left, after_gate)
    first = by_step["first"][0]
    assert first["parent_job_id"] == body["job_id"]
    assert first["result"]["result"]["echo"] == {"name": "Ada", "count": 7, "greeting": "Hello Ada"}
    assert by_step["left"][0]["parent_job_id"] == first["job_id"]
    assert by_step["after_gate"][0]["parent_job_id"] == by_step["gate"][0]["job_id"]
    for last in by_step["last"]:
        assert last["result"]["result"]["echo"]["who"] == "Ada"  # baggage reached the called pipeline

    # the same through GET /job/{id}/tree, from the read models
    job_id = body["job_id"]

    async def projected() -> Any:
        st, tree = await s.client.get(f"/job/{job_id}/tree")
        return tree if st == 200 and len(tree) == 7 and all(n["status"] == "succeeded" for n in tree) else None

    tree = await wait_until(projected, timeout_s=15, what="tree projected")
    assert tree[0]["job_id"] == job_id and tree[0]["plugin"] == "pipeline" and tree[0]["command"] == "main"
    assert tree[0]["parent_job_id"] is None and all(n["parent_job_id"] for n in tree[1:])
    status, child = await s.client.get(f"/job/{first['job_id']}")
    assert status == 200 and child["submitted_by"] == "route" and child["parent_job_id"] == job_id


async def test_offloaded_results_still_route_their_events(make_config: Any, start_stack: Any) -> None:
    """With every result in the Object Store (threshold 0), steps still hand their emitted events on."""
    s = await start_stack(make_config(plugins=PLUGINS, pipelines=MAIN, offload={"threshold_bytes": 0}))
    status, body = await run_sync(s.client, "main", {"name": "Ola", "count": 9})
    assert status == 200 and body["status"] == "succeeded"
    assert sorted(n["step_id"] for n in body["tree"]) == sorted(["first", "left", "gate", "after_gate", "last", "last"])


async def test_an_agent_is_a_pipeline_step(make_config: Any, start_stack: Any) -> None:
    agents = {
        "demo": {
            "role": "Echo",
            "goal": "Echo",
            "instructions": "Answer.",
            "llm": {"provider": "echo"},
            "tools": [],
            "max_iterations": 2,
        }
    }
    pipes = [
        {
            "name": "ask",
            "execution_mode": "synchronous",
            "timeout": "20s",
            "steps": [{"id": "think", "uses": "agent.demo"}, {"id": "after", "uses": "echo_py"}],
        }
    ]
    s = await start_stack(make_config(plugins=PLUGINS, pipelines=pipes, agents=agents))
    status, body = await run_sync(s.client, "ask", {"message": "hello agent"})
    assert status == 200 and body["status"] == "succeeded", body
    think = next(n for n in body["tree"] if n["step_id"] == "think")
    after = next(n for n in body["tree"] if n["step_id"] == "after")
    assert think["plugin"] == "agent" and think["command"] == "demo"
    assert after["parent_job_id"] == think["job_id"]
    assert "hello agent" in str(after["result"]["result"]["echo"])  # the agent's answer flowed on


async def test_false_step_if_bypasses_the_step_and_continues(make_config: Any, start_stack: Any) -> None:
    s = await start_stack(make_config(plugins=PLUGINS, pipelines=MAIN))
    status, body = await run_sync(s.client, "main", {"name": "Bo", "count": 2})
    assert status == 200 and body["status"] == "succeeded"
    steps = [n["step_id"] for n in body["tree"]]
    assert "gate" not in steps and "after_gate" in steps
    after = next(n for n in body["tree"] if n["step_id"] == "after_gate")
    first = next(n for n in body["tree"] if n["step_id"] == "first")
    assert after["parent_job_id"] == first["job_id"]  # the bypassed step handed the event straight on
    assert s.api.bus is not None
    history = await s.api.bus.history("EVENTS", f"evt.job.{body['job_id']}.switch")
    assert [env.data["switch"] for _, env in history] == ["ductile.switch.false"]


async def test_async_pipeline_and_the_tree_endpoint(make_config: Any, start_stack: Any) -> None:
    s = await start_stack(make_config(plugins=PLUGINS, pipelines=MAIN))
    status, body = await s.client.post("/pipeline/main?async=true", json={"payload": {"name": "Cy", "count": 9}})
    assert status == 202 and body["status"] == "queued"
    status, early = await s.client.get(f"/job/{body['job_id']}")
    assert status == 200 and early["plugin"] == "pipeline"  # read your writes
    done = await s.client.wait_job(body["job_id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded"


async def test_emitted_event_starts_a_pipeline(make_config: Any, start_stack: Any) -> None:
    pipes = [
        {
            "name": "on_handled",
            "on": "echo.handled",
            "from_plugin": "echo",
            "if": {"path": "payload.kind", "op": "eq", "value": "video"},
            "steps": [{"id": "react", "uses": "echo_py"}],
        }
    ]
    s = await start_stack(make_config(plugins=PLUGINS, pipelines=pipes))
    matching = await s.client.submit("echo", "handle", {"kind": "video"})
    other = await s.client.submit("echo", "handle", {"kind": "audio"})
    for job_id in (matching, other):
        await s.client.wait_job(job_id)
    root = routing.derived_id(f"{matching}:0", "on_handled")
    done = await s.client.wait_job(root, {"succeeded", "failed"}, may_not_exist_yet=True)
    assert done["status"] == "succeeded" and done["parent_job_id"] == matching
    status, _ = await s.client.get(f"/job/{routing.derived_id(f'{other}:0', 'on_handled')}")
    assert status == 404  # the pipeline-level if kept it out


async def test_on_hook_pipeline_fires_on_job_failed(make_config: Any, start_stack: Any, tmp_path: Path) -> None:
    pipes = [
        {
            "name": "alert",
            "on-hook": "job.failed",
            "steps": [{"id": "notify", "uses": "echo_py", "with": {"failed_job": "{payload.job_id}"}}],
        }
    ]
    s = await start_stack(make_config(plugins=PLUGINS, pipelines=pipes))
    job_id = await s.client.submit("flaky", "poll", {"counter_file": str(tmp_path / "n")})
    await s.client.wait_job(job_id, {"dead"})
    root = routing.derived_id(job_id, "hook", "alert")
    done = await s.client.wait_job(root, {"succeeded", "failed"}, may_not_exist_yet=True)
    assert done["status"] == "succeeded"
    assert s.api.bus is not None  # the tree is read from the projection: let it catch up
    await s.projector.wait_for(await s.api.bus.stream_last_seq("EVENTS"))
    status, tree = await s.client.get(f"/job/{root}/tree")
    assert status == 200
    notify = next(n for n in tree if n["step_id"] == "notify")
    assert notify["result"]["result"]["echo"]["failed_job"] == job_id


async def test_a_dead_step_fails_the_root_naming_the_step(make_config: Any, start_stack: Any, tmp_path: Path) -> None:
    pipes = [
        {
            "name": "breaks",
            "execution_mode": "synchronous",
            "timeout": "20s",
            "steps": [{"id": "ok", "uses": "echo_py"}, {"id": "bad", "uses": "flaky.poll"}],
        }
    ]
    s = await start_stack(make_config(plugins=PLUGINS, pipelines=pipes))
    status, body = await run_sync(s.client, "breaks", {"counter_file": str(tmp_path / "n")})
    assert status == 200 and body["status"] == "failed"
    assert "'bad'" in body["error"]


async def test_sync_timeout_fanout_and_concurrency_cap(make_config: Any, start_stack: Any) -> None:
    pipes = [
        {
            "name": "slow",
            "execution_mode": "synchronous",
            "timeout": "1s",
            "steps": [{"uses": "napper.poll", "with": {"seconds": 3}}],
        },
        {"name": "fan", "execution_mode": "synchronous", "steps": [{"split": [{"uses": "echo_py"}, {"uses": "echo"}]}]},
    ]
    s = await start_stack(
        make_config(
            plugins=PLUGINS,
            pipelines=pipes,
            api={
                "listen": "127.0.0.1:0",
                "max_concurrent_sync": 1,
                "auth": {"tokens": [{"token": "test-admin-token-000", "scopes": ["*"]}]},
            },
        )
    )
    status, body = await run_sync(s.client, "fan", {})
    assert status == 400 and "async=true" in body["error"]
    status, body = await s.client.post("/pipeline/fan?async=true", json={})
    assert status == 202
    first = asyncio.create_task(run_sync(s.client, "slow", {}))
    assert s.api.app is not None
    slots = s.api.app[api_pipelines.SYNC_SLOTS]

    async def first_holds_the_slot() -> bool:
        return slots.locked()

    await wait_until(first_holds_the_slot, what="the first synchronous run to take the one slot")
    status, body = await run_sync(s.client, "slow", {})
    assert status == 429 and body["code"] == "too_many_requests"
    status, body = await first
    assert status == 202 and body["timeout_exceeded"] is True and body["status"] == "running"
    done = await s.client.wait_job(body["job_id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded"


async def test_max_depth_stops_runaway_recursion(make_config: Any, start_stack: Any) -> None:
    pipes = [{"name": "loop", "on": "echo.handled", "max_depth": 3, "steps": [{"id": "again", "uses": "echo_py"}]}]
    s = await start_stack(make_config(plugins=PLUGINS, pipelines=pipes))
    job_id = await s.client.submit("echo_py", "handle", {"n": 1})
    await s.client.wait_job(job_id)
    assert s.api.bus is not None

    async def stopped() -> Any:
        history = await s.api.bus.history("EVENTS", "evt.job.*.failed")  # type: ignore[union-attr]
        return [env for _, env in history if "max_depth" in str(env.data.get("error"))]

    failures = await wait_until(stopped, timeout_s=20, what="a root failed on max_depth")
    assert failures[0].data["plugin"] == "pipeline"


async def test_unknown_pipeline_and_scopes(make_config: Any, start_stack: Any) -> None:
    from tests.support.stack import TOKENS

    s = await start_stack(make_config(plugins=PLUGINS, pipelines=MAIN))
    status, _ = await s.client.post("/pipeline/nope", json={})
    assert status == 404
    status, _ = await s.client.post("/pipeline/main", json={}, token=TOKENS["plugin_ro"][0])
    assert status == 403
    status, _ = await s.client.post("/pipeline/main", data=b"{bad", headers={"Content-Type": "application/json"})
    assert status == 400


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ([{"name": "p", "steps": [{"uses": "nope"}]}], "pipelines.p.steps[0].uses: unknown plugin 'nope'"),
        ([{"name": "p", "steps": [{"uses": "echo.nope"}]}], "has no command 'nope'"),
        ([{"name": "p", "steps": [{"uses": "agent.nobody"}]}], "unknown agent 'nobody'"),
        ([{"name": "p", "steps": [{"call": "q"}]}], "pipelines.p.steps[0].call: unknown pipeline 'q'"),
        ([{"name": "p", "steps": [{"id": "a", "uses": "echo"}, {"id": "a", "uses": "echo"}]}], "duplicate step id 'a'"),
        ([{"name": "p", "steps": [{"call": "q"}]}, {"name": "q", "steps": [{"call": "p"}]}], "needs max_depth"),
        (
            [
                {
                    "name": "p",
                    "steps": [{"id": "x", "uses": "echo", "if": {"path": "payload.a", "op": "like", "value": 1}}],
                }
            ],
            "pipelines.p.steps[0] (x).if: unknown op 'like'",
        ),
        (
            [{"name": "p", "steps": [{"id": "x", "uses": "echo", "if": {"path": "body.a", "op": "eq", "value": 1}}]}],
            "must start with payload.",
        ),
        ([{"name": "p", "steps": [{"id": "x", "uses": "echo", "with": {"m": "{payload.a"}}]}], "with.m: unbalanced"),
        ([{"name": "p", "steps": [{"uses": "echo", "call": "p"}]}], "exactly one of"),
        ([{"name": "p", "steps": [{"split": [{"uses": "echo"}], "with": {"a": 1}}]}], "only allowed on a uses step"),
        (
            [
                {
                    "name": "p",
                    "steps": [{"id": "x", "uses": "echo", "if": {"path": "payload.a", "op": "regex", "value": "("}}],
                }
            ],
            "invalid regex",
        ),
    ],
)
def test_config_errors_name_the_pipeline_and_step(spec: list[dict[str, Any]], needle: str) -> None:
    cat = catalog.scan([REPO / "plugins", TEST_PLUGINS])
    with pytest.raises(pipelines.PipelineError) as info:
        pipelines.compile_all(spec, cat)
    assert needle in str(info.value)


def test_config_load_refuses_a_bad_pipeline(tmp_path: Path) -> None:
    from services.core import config

    path = tmp_path / "c.yaml"
    path.write_text("pipelines:\n  - name: p\n    steps: [{uses: missing_plugin}]\n")
    with pytest.raises(errors.ConfigError, match=r"pipelines\.p\.steps\[0\]\.uses"):
        config.load(path, env={})

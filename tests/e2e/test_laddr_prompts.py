"""Laddr prompts over HTTP: sequential chains pipe each agent's output into the next one's input,
the first failing agent stops the chain and is named, single mode, cancel, and bad input."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.support import fake_llm, infra, laddr
from tests.support.fake_llm import FakeLLM
from tests.support.stack import TOKENS, Stack


def three_agents(fake: FakeLLM) -> dict[str, Any]:
    return {name: laddr.agent(fake, f"m-{name}") for name in ("analyzer", "writer", "editor")}


async def test_sequential_prompt_pipes_each_output_into_the_next_agent(
    make_config: Any, start_stack: Any, fake: FakeLLM
) -> None:
    s: Stack = await start_stack(make_config(plugins=laddr.plugins(), agents=three_agents(fake)))
    status, body = await s.client.post(
        "/api/prompts",
        json={
            "prompt_name": "story",
            "mode": "sequential",
            "agents": ["analyzer", "writer", "editor"],
            "inputs": {"task": "Write a haiku"},
        },
        token=TOKENS["jobs_rw"][0],
    )
    assert status == 200, body
    assert (
        body["status"] == "running"
        and body["mode"] == "sequential"
        and body["agents"] == ["analyzer", "writer", "editor"]
    )
    prompt_id = body["prompt_id"]
    done = await s.client.wait_job(prompt_id, timeout_s=30)
    assert done["status"] == "succeeded", done
    assert fake.requests_for("m-writer")[0]["messages"][-1] == {"role": "user", "content": "m-analyzer: Write a haiku"}
    assert fake.requests_for("m-editor")[0]["messages"][-1]["content"] == "m-writer: m-analyzer: Write a haiku"

    await laddr.projected(s)
    status, view = await s.client.get(f"/api/prompts/{prompt_id}", token=TOKENS["jobs_ro"][0])
    assert status == 200
    assert view["status"] == "completed" and view["prompt_name"] == "story" and view["error"] is None
    assert view["inputs"] == {"task": "Write a haiku"}
    assert view["outputs"] == "m-editor: m-writer: m-analyzer: Write a haiku"
    assert [(st["agent"], st["status"]) for st in view["steps"]] == [
        ("analyzer", "completed"),
        ("writer", "completed"),
        ("editor", "completed"),
    ]
    assert view["token_usage"]["total_tokens"] == 30 and [m["model"] for m in view["token_usage"]["by_model"]] == [
        "m-analyzer",
        "m-writer",
        "m-editor",
    ]  # in the order first used
    trail = await laddr.traces(s, prompt_id)
    assert [(t["event_type"], t["payload"]["to_agent"]) for t in trail] == [
        ("delegation", "analyzer"),
        ("delegation", "writer"),
        ("delegation", "editor"),
    ]
    assert trail[1]["payload"]["inputs"] == {"input": "m-analyzer: Write a haiku"}

    status, listed = await s.client.get("/api/prompts?limit=5")
    assert status == 200 and listed["limit"] == 5
    assert [(p["prompt_id"], p["prompt_name"], p["status"]) for p in listed["prompts"]] == [
        (prompt_id, "story", "completed")
    ]
    status, tree = await s.client.get(f"/job/{prompt_id}/tree")
    assert [n["plugin"] for n in tree] == ["prompt", "agent", "agent", "agent"]


async def test_the_first_failing_agent_stops_the_chain_and_is_named(
    make_config: Any, start_stack: Any, fake: FakeLLM
) -> None:
    s: Stack = await start_stack(make_config(plugins=laddr.plugins(), agents=three_agents(fake)))
    fake.script("m-writer", fake_llm.error(400, "context length exceeded"))
    status, body = await s.client.post(
        "/api/prompts",
        json={
            "prompt_name": "story",
            "mode": "sequential",
            "agents": ["analyzer", "writer", "editor"],
            "inputs": {"task": "x"},
        },
    )
    assert status == 200
    done = await s.client.wait_job(body["prompt_id"], {"dead"}, timeout_s=30)
    assert "agent 'writer' (step 2 of 3) failed" in done["last_error"]
    assert "context length exceeded" in done["last_error"]
    assert fake.requests_for("m-editor") == []  # the chain stopped
    await laddr.projected(s)
    status, view = await s.client.get(f"/api/prompts/{body['prompt_id']}")
    assert (
        view["status"] == "failed" and view["failed_agent"] == "writer" and view["outputs"] == {"error": view["error"]}
    )
    assert "agent 'writer'" in view["error"]
    assert [(st["agent"], st["status"]) for st in view["steps"]] == [("analyzer", "completed"), ("writer", "failed")]
    trail = await laddr.traces(s, body["prompt_id"])
    assert [t["event_type"] for t in trail] == ["delegation", "delegation", "task_error"]
    assert trail[-1]["payload"]["agent"] == "writer"
    attempts = [
        r["attempt"]
        for r in await s.api.pool.fetch("SELECT attempt FROM job_logs WHERE job_id = $1", body["prompt_id"])
    ]
    assert attempts == [1]  # a failed chain is not retried: the agent had its own retries


async def test_single_mode_and_bad_prompt_requests(make_config: Any, start_stack: Any, fake: FakeLLM) -> None:
    s: Stack = await start_stack(make_config(plugins=laddr.plugins(), agents=three_agents(fake)))
    status, body = await s.client.post("/api/prompts", json={"prompt_name": "writer", "inputs": {"message": "hi"}})
    assert status == 200 and body["mode"] == "single" and body["agent"] == "writer" and body["agents"] == ["writer"]
    await s.client.wait_job(body["prompt_id"])
    await laddr.projected(s)  # token usage is summed from the traces table
    status, view = await s.client.get(f"/api/prompts/{body['prompt_id']}")
    assert view["outputs"] == "m-writer: hi" and view["token_usage"]["total_tokens"] == 10
    cases = [
        ({"prompt_name": "writer", "mode": "parallel"}, 422, "mode"),
        ({"mode": "single", "agents": ["writer", "editor"]}, 422, "exactly one"),
        ({"inputs": {}}, 422, "prompt_name"),
        ({"prompt_name": "nobody", "inputs": {}}, 404, "nobody"),
        ({"mode": "sequential", "agents": ["writer", "ghost"], "inputs": {}}, 404, "ghost"),
        ({"prompt_name": "writer", "agents": "writer"}, 422, "agents"),
        ({"prompt_name": "writer", "inputs": "text"}, 422, "inputs"),
    ]
    for payload, code, needle in cases:
        status, body = await s.client.post("/api/prompts", json=payload)
        assert status == code and needle in body["error"], (payload, body)
    plugin_job = await s.client.submit("echo_py", "poll", {})
    for path in (f"/api/prompts/{plugin_job}", "/api/prompts/nope"):
        status, _ = await s.client.get(path)
        assert status == 404


async def test_cancelling_a_prompt_cancels_its_running_agent(make_config: Any, start_stack: Any, fake: FakeLLM) -> None:
    s: Stack = await start_stack(make_config(plugins=laddr.plugins(), agents=three_agents(fake)))
    fake.script("m-analyzer", fake_llm.held(asyncio.Event(), fake_llm.text("too late")))  # never answers
    status, body = await s.client.post(
        "/api/prompts", json={"mode": "sequential", "agents": ["analyzer", "writer"], "inputs": {}}
    )
    prompt_id = body["prompt_id"]

    async def agent_running() -> dict[str, Any] | None:
        _, view = await s.client.get(f"/api/prompts/{prompt_id}")
        steps = view["steps"] if view else []
        return steps[0] if steps and steps[0]["status"] == "running" else None

    step = await infra.wait_until(agent_running, timeout_s=10, what="the first agent to run")
    status, _ = await s.client.post(f"/job/{prompt_id}/cancel")
    assert status == 202
    assert (await s.client.wait_job(prompt_id, {"cancelled"}))["status"] == "cancelled"
    assert (await s.client.wait_job(step["job_id"], {"cancelled"}))["status"] == "cancelled"
    prompt_trail = await laddr.traces(s, prompt_id)
    agent_trail = await laddr.traces(s, step["job_id"])
    assert prompt_trail[-1]["event_type"] == "task_cancelled"
    assert agent_trail[-1]["event_type"] == "task_cancelled"
    assert fake.requests_for("m-writer") == []

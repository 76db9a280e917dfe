"""Laddr conformance, agents (laddr-conformance.md route table rows 11 and 17, §8.3 row 12), over
real HTTP against the fake LLM: the listing with `trace_count`/`last_executed`, and each agent's
tools with the JSON schema its model sees."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conformance.laddr.jobs_support import run_echo, start
from tests.support import laddr
from tests.support.fake_llm import FakeLLM
from tests.support.stack import TOKENS, Stack


@pytest.fixture
async def s(make_config: Any, start_stack: Any, fake: FakeLLM) -> Stack:
    return await start(make_config, start_stack, fake)


async def test_route_11_agents_list(s: Stack) -> None:
    status, body = await s.client.get("/api/agents", token=TOKENS["jobs_ro"][0])
    assert status == 200 and [a["name"] for a in body["agents"]] == ["echo", "plain", "slow"]
    echo = body["agents"][0]
    assert {"name", "role", "goal", "status", "tools", "last_seen", "trace_count", "last_executed"} <= echo.keys()
    assert echo["role"] == "m-echo role" and echo["goal"] == "m-echo goal" and echo["tools"] == ["echo_py.poll"]
    assert echo["status"] in ("active", "stale")


async def test_route_17_agent_tools(s: Stack) -> None:
    status, body = await s.client.get("/api/agents/echo/tools", token=TOKENS["jobs_ro"][0])
    assert status == 200 and body["agent"] == "echo"
    (tool,) = body["tools"]
    assert {"name", "description", "parameters"} <= tool.keys() and tool["name"] == "echo_py.poll"
    assert tool["parameters"] == {"type": "object", "properties": {"message": {"type": "string"}}}
    assert tool["description"] and tool["function"] == "echo_py__poll"
    status, body = await s.client.get("/api/agents/plain/tools")
    assert status == 200 and body == {"agent": "plain", "tools": []}
    status, body = await s.client.get("/api/agents/ghost/tools")
    assert status == 404
    status, _ = await s.client.get("/api/agents/echo/tools", token=TOKENS["plugin_rw"][0])
    assert status == 403


async def test_s83_12_agents_carry_trace_count_and_last_executed(s: Stack, fake: FakeLLM) -> None:
    _, before = await s.client.get("/api/agents")
    assert all(a["trace_count"] == 0 and a["last_executed"] is None for a in before["agents"])
    job_id = await run_echo(s, fake)
    await laddr.projected(s)
    _, body = await s.client.get("/api/agents")
    by_name = {a["name"]: a for a in body["agents"]}
    _, traces = await s.client.get(f"/api/traces?job_id={job_id}")
    assert by_name["echo"]["trace_count"] == len(traces["traces"]) == 8  # with autonomous_think per iteration
    assert by_name["echo"]["last_executed"] == traces["traces"][-1]["timestamp"]
    assert by_name["plain"]["trace_count"] == 0 and by_name["plain"]["last_executed"] is None

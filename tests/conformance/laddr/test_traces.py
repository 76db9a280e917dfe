"""Laddr conformance, traces and metrics (laddr-conformance.md route table rows 19-22, §8.3 rows
15-17), over real HTTP against the fake LLM: both filter names, a job's traces oldest first with
`limit` only when given, `parent_id` on every item, groups with all their traces, 404 for ids that
cannot exist, metrics computed without Laddr's miscounts (§3.3)."""

from __future__ import annotations

from typing import Any

import pytest

from services.core import envelope, subjects
from tests.conformance.laddr.jobs_support import USAGE, ok, run_echo, start
from tests.support import fake_llm, laddr
from tests.support.fake_llm import FakeLLM
from tests.support.stack import Stack

TRACE_KEYS = {"id", "job_id", "agent_name", "event_type", "parent_id", "payload", "timestamp"}
RUN = [
    "task_start",
    "llm_usage",
    "autonomous_think",
    "tool_call",
    "tool_result",
    "llm_usage",
    "autonomous_think",
    "task_complete",
]


@pytest.fixture
async def s(make_config: Any, start_stack: Any, fake: FakeLLM) -> Stack:
    return await start(make_config, start_stack, fake)


def has_parent_key(trace: dict[str, Any]) -> bool:
    return "parent_id" in trace and (trace["parent_id"] is None or isinstance(trace["parent_id"], int))


async def test_route_19_traces_list_and_filters(s: Stack, fake: FakeLLM) -> None:
    echo_job = await run_echo(s, fake)
    _, body = await s.client.post("/api/jobs", json={"pipeline_name": "plain", "inputs": {"q": "x"}})
    await s.client.wait_job(body["job_id"])
    await laddr.projected(s)
    status, listed = await s.client.get("/api/traces?limit=5")
    assert status == 200 and len(listed["traces"]) == 5
    ids = [t["id"] for t in listed["traces"]]
    assert ids == sorted(ids, reverse=True) and all(TRACE_KEYS == t.keys() for t in listed["traces"])
    for parameter in ("agent", "agent_name"):
        _, only = await s.client.get(f"/api/traces?{parameter}=echo")
        assert [t["event_type"] for t in only["traces"]] == RUN[::-1] and {t["job_id"] for t in only["traces"]} == {
            echo_job
        }, parameter
        _, none = await s.client.get(f"/api/traces?{parameter}=ghost")
        assert none["traces"] == [], parameter


async def test_route_20_grouped_traces(s: Stack, fake: FakeLLM) -> None:
    first = await run_echo(s, fake)
    second = await run_echo(s, fake)
    status, body = await s.client.get("/api/traces/grouped?limit=1")
    assert status == 200 and [g["job_id"] for g in body["grouped_traces"]] == [second]
    status, body = await s.client.get("/api/traces/grouped")
    groups = body["grouped_traces"]
    assert [g["job_id"] for g in groups] == [second, first]  # the job that started last first
    for group in groups:
        assert {"job_id", "trace_count", "agents", "start_time", "end_time", "traces"} == group.keys()
        assert [t["event_type"] for t in group["traces"]] == RUN and group["trace_count"] == len(RUN)
        assert group["agents"] == ["echo"] and group["start_time"] == group["traces"][0]["timestamp"]
        assert group["end_time"] == group["traces"][-1]["timestamp"] and all(map(has_parent_key, group["traces"]))


async def test_route_21_one_trace(s: Stack, fake: FakeLLM) -> None:
    job_id = await run_echo(s, fake)
    _, body = await s.client.get(f"/api/traces?job_id={job_id}")
    start_trace = body["traces"][0]
    status, one = await s.client.get(f"/api/traces/{start_trace['id']}")
    assert status == 200 and one == start_trace and one["event_type"] == "task_start"
    for raw in ("999999999", "abc", "0", "-1", "99999999999999999999999"):
        status, _ = await s.client.get(f"/api/traces/{raw}")
        assert status == 404, raw


async def test_route_22_metrics_keys_and_types(s: Stack, fake: FakeLLM) -> None:
    await run_echo(s, fake)
    status, metrics = await s.client.get("/api/metrics")
    assert status == 200
    laddr_keys = {
        "total_jobs",
        "completed_jobs",
        "failed_jobs",
        "avg_latency_ms",
        "active_agents_count",
        "cache_hits",
        "tool_calls",
        "total_tokens",
        "timestamp",
    }
    assert laddr_keys <= metrics.keys()
    assert all(isinstance(metrics[k], int) for k in laddr_keys - {"timestamp"}) and metrics["timestamp"].endswith("Z")


async def test_s83_15_job_traces_oldest_first_limit_only_when_given(s: Stack, fake: FakeLLM) -> None:
    job_id = await run_echo(s, fake)
    await run_echo(s, fake)
    status, body = await s.client.get(f"/api/traces?job_id={job_id}")
    assert status == 200 and [t["event_type"] for t in body["traces"]] == RUN
    assert all(t["job_id"] == job_id and has_parent_key(t) for t in body["traces"])
    _, limited = await s.client.get(f"/api/traces?job_id={job_id}&limit=2")
    assert [t["event_type"] for t in limited["traces"]] == RUN[:2]
    _, wide = await s.client.get("/api/traces?limit=200")
    assert len(wide["traces"]) == 2 * len(RUN) and all(map(has_parent_key, wide["traces"]))


async def test_s83_16_groups_count_every_trace_of_their_job(s: Stack, fake: FakeLLM) -> None:
    # Laddr reads only limit x 10 rows, so with limit=1 a job of 16 traces shows 10: ours is complete
    await run_echo(s, fake)
    calls = [("echo_py__poll", {"message": str(n)}) for n in range(5)]
    fake.script("m-echo", fake_llm.tool_calls(*calls), fake_llm.text("five"))
    status, body = await s.client.post("/api/jobs", json={"pipeline_name": "echo", "inputs": {"q": "5"}})
    assert ok(status)
    await s.client.wait_job(body["job_id"])
    await laddr.projected(s)
    _, grouped = await s.client.get("/api/traces/grouped?limit=1")
    (group,) = grouped["grouped_traces"]
    assert group["job_id"] == body["job_id"] and group["trace_count"] == len(group["traces"]) == 1 + 2 + 10 + 2 + 1
    assert [t["event_type"] for t in group["traces"]].count("tool_result") == 5
    _, everything = await s.client.get("/api/traces/grouped?limit=3")
    assert [g["trace_count"] for g in everything["grouped_traces"]] == [16, len(RUN)]


async def test_s83_17_metrics_are_computed_without_laddrs_miscounts(s: Stack, fake: FakeLLM) -> None:
    await run_echo(s, fake)  # a root job and its tool call's child job
    _, prompt = await s.client.post("/api/prompts", json={"prompt_name": "plain", "inputs": {"q": "p"}})
    await s.client.wait_job(prompt["prompt_id"])
    status, chat = await s.client.get("/api/agents/plain/chat", json={"message": "c"})
    assert status == 200 and chat["status"] == "completed"
    fake.script("m-plain", fake_llm.error(401, "bad key"))
    _, failing = await s.client.post("/api/jobs", json={"pipeline_name": "plain", "inputs": {}})
    await s.client.wait_job(failing["job_id"])
    # a provider that reports no total: prompt + completion count (as in token_usage); a count that is not a
    # number is not counted (and fails nothing)
    assert s.api.bus is not None
    for n, usage in enumerate(
        (
            {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": None},
            {"prompt_tokens": "lots", "completion_tokens": 2},
        )
    ):
        trace = envelope.make(
            "trace.llm_usage",
            source="test",
            job_id=chat["task_id"],
            id=f"test:usage:{n}",
            data={"agent_name": "plain", "attempt": 1, "payload": {"provider": "p", "model": "m", **usage}},
        )
        await s.api.bus.publish(subjects.trace_event(chat["task_id"], "llm_usage"), trace)
    await laddr.projected(s)

    _, metrics = await s.client.get("/api/metrics")
    pool = s.api.pool
    assert pool is not None
    # one job per run: the echo job, the prompt (not its agent's job too), the chat, the failed job
    assert metrics["total_jobs"] == 4 and metrics["all_jobs"] == await pool.fetchval("SELECT count(*) FROM jobs") == 6
    assert metrics["completed_jobs"] == 3 and metrics["failed_jobs"] == 1  # agent failures count as failed
    latency = await pool.fetchval(
        "SELECT avg(extract(epoch FROM completed_at - created_at) * 1000) FROM jobs "
        "WHERE parent_job_id IS NULL AND status = 'succeeded'"
    )
    assert metrics["avg_latency_ms"] == round(float(latency)) and metrics["avg_latency_ms"] > 0
    assert metrics["tool_calls"] == 1 and metrics["cache_hits"] == 0
    assert metrics["total_tokens"] == USAGE["total_tokens"] + 10 + 10 + 7 + 2
    _, chat_job = await s.client.get(f"/api/jobs/{chat['task_id']}")
    assert chat_job["token_usage"]["total_tokens"] == 10 + 7 + 2
    assert chat_job["token_usage"]["by_model"][1] == {
        "provider": "p",
        "model": "m",
        "prompt_tokens": 4,
        "completion_tokens": 5,
        "total_tokens": 9,
        "calls": 2,
    }

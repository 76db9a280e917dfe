"""Laddr metrics, traces and health: every metric equals its SQL over the traces and jobs tables,
an idempotent tool's result is reused from the cache (cache_hit, no child job), the trace
endpoints, rebuild equality of the traces table, and /api/health."""

from __future__ import annotations

from typing import Any

import asyncpg

from services.projector import rebuild
from tests.support import fake_llm, laddr
from tests.support.fake_llm import FakeLLM
from tests.support.stack import TOKENS, Stack


async def run_agent(s: Stack, name: str, inputs: dict[str, Any], statuses: set[str] | None = None) -> str:
    status, body = await s.client.post("/api/jobs", json={"pipeline_name": name, "inputs": inputs})
    assert status == 200, body
    await s.client.wait_job(body["job_id"], statuses or {"succeeded"}, timeout_s=30)
    return str(body["job_id"])


async def test_metrics_equal_what_the_tables_say_and_cache_hits_skip_the_child_job(
    make_config: Any, start_stack: Any, fake: FakeLLM
) -> None:
    s: Stack = await start_stack(
        make_config(
            plugins=laddr.plugins(),
            agents={
                "checker": laddr.agent(fake, "m-check", tools=["echo_py.health", "echo_py.poll"], tool_cache_ttl="1m"),
                "failing": laddr.agent(fake, "m-fail"),
            },
        )
    )
    for answer in ("first", "second"):
        fake.script(
            "m-check",
            fake_llm.tool_calls(("echo_py__health", {}), ("echo_py__poll", {"message": answer})),
            fake_llm.text(answer, prompt_tokens=3, completion_tokens=2),
        )
    fake.script("m-fail", fake_llm.error(401, "bad key"))
    first = await run_agent(s, "checker", {"message": "check"})
    second = await run_agent(s, "checker", {"message": "check"})
    await run_agent(s, "failing", {"message": "x"}, {"dead"})
    await s.client.wait_job(await s.client.submit("echo_py", "poll", {"message": "plain"}))

    first_trail, second_trail = await laddr.traces(s, first), await laddr.traces(s, second)
    kinds = [t["event_type"] for t in second_trail]
    assert kinds[:3] == ["task_start", "llm_usage", "autonomous_think"]
    # both calls of the message run at once: their traces interleave
    assert sorted(kinds[3:7]) == ["cache_hit", "tool_call", "tool_call", "tool_result"]
    assert kinds[7:] == ["llm_usage", "autonomous_think", "task_complete"]
    assert "cache_hit" not in [t["event_type"] for t in first_trail]  # the first run filled the cache
    assert next(t for t in second_trail if t["event_type"] == "cache_hit")["payload"]["result"] == {"healthy": True}
    children = await s.api.pool.fetch("SELECT command FROM jobs WHERE parent_job_id = $1 ORDER BY command", second)
    assert [r["command"] for r in children] == ["poll"]  # echo_py.poll is not idempotent: never cached

    status, metrics = await s.client.get("/api/metrics", token=TOKENS["jobs_ro"][0])
    assert status == 200
    pool = s.api.pool
    assert pool is not None
    # the jobs GET /api/jobs lists: an agent's tool calls are part of its job, not jobs of their own
    root = "parent_job_id IS NULL"
    assert metrics["total_jobs"] == await pool.fetchval(f"SELECT count(*) FROM jobs WHERE {root}") == 4
    assert metrics["all_jobs"] == await pool.fetchval("SELECT count(*) FROM jobs") == 7
    assert (
        metrics["completed_jobs"]
        == await pool.fetchval(f"SELECT count(*) FROM jobs WHERE {root} AND status = 'succeeded'")
        == 3
    )
    assert (
        metrics["failed_jobs"]
        == await pool.fetchval(f"SELECT count(*) FROM jobs WHERE {root} AND status IN ('failed', 'timed_out', 'dead')")
        == 1
    )
    latency = await pool.fetchval(
        "SELECT avg(extract(epoch FROM completed_at - created_at) * 1000) FROM jobs "
        f"WHERE {root} AND status = 'succeeded'"
    )
    assert metrics["avg_latency_ms"] == round(float(latency)) and isinstance(metrics["avg_latency_ms"], int)
    assert (
        metrics["cache_hits"] == await pool.fetchval("SELECT count(*) FROM traces WHERE event_type = 'cache_hit'") == 1
    )
    assert (
        metrics["tool_calls"] == await pool.fetchval("SELECT count(*) FROM traces WHERE event_type = 'tool_call'") == 4
    )
    assert (
        metrics["total_tokens"]
        == await pool.fetchval(
            "SELECT sum((payload->>'total_tokens')::bigint) FROM traces WHERE event_type = 'llm_usage'"
        )
        == 2 * (28 + 5)
    )
    status, agents = await s.client.get("/api/agents")
    assert metrics["active_agents_count"] == sum(a["status"] == "active" for a in agents["agents"]) == 2
    assert metrics["timestamp"].endswith("Z")


async def test_trace_endpoints_and_rebuild_equality(
    make_config: Any, start_stack: Any, fake: FakeLLM, database_url: str
) -> None:
    s: Stack = await start_stack(
        make_config(
            plugins=laddr.plugins(),
            agents={"a": laddr.agent(fake, "m-a", tools=["echo_py.poll"]), "b": laddr.agent(fake, "m-b")},
        )
    )
    fake.script("m-a", fake_llm.tool_calls(("echo_py__poll", {"message": "t"})), fake_llm.text("done"))
    job_a = await run_agent(s, "a", {"message": "go"})
    job_b = await run_agent(s, "b", {"message": "go"})
    await laddr.projected(s)

    status, body = await s.client.get("/api/traces?limit=3", token=TOKENS["jobs_ro"][0])
    assert status == 200 and len(body["traces"]) == 3
    ids = [t["id"] for t in body["traces"]]
    assert ids == sorted(ids, reverse=True) and body["traces"][0]["job_id"] == job_b
    status, body = await s.client.get("/api/traces?agent=a")
    assert {t["agent_name"] for t in body["traces"]} == {"a"} and len(body["traces"]) == 8
    status, body = await s.client.get(f"/api/traces?job_id={job_b}&agent=b")
    assert [t["event_type"] for t in body["traces"]] == [
        "task_start",
        "llm_usage",
        "autonomous_think",
        "task_complete",
    ]  # oldest first
    one = next(t for t in body["traces"] if t["event_type"] == "llm_usage")
    status, fetched = await s.client.get(f"/api/traces/{one['id']}")
    assert status == 200 and fetched == one
    assert one["payload"]["model"] == "m-b" and one["payload"]["total_tokens"] == 10

    status, grouped = await s.client.get("/api/traces/grouped?limit=5")
    assert status == 200
    groups = grouped["grouped_traces"]
    assert [g["job_id"] for g in groups] == [job_b, job_a]
    assert groups[1]["trace_count"] == 8 and groups[1]["agents"] == ["a"]
    assert groups[1]["start_time"] == groups[1]["traces"][0]["timestamp"] <= groups[1]["end_time"]

    for path, code in [("/api/traces/999999", 404), ("/api/traces/abc", 404), ("/api/traces?limit=0", 422)]:
        status, body = await s.client.get(path)
        assert status == code, (path, body)
    status, _ = await s.client.get("/api/traces", token=TOKENS["plugin_rw"][0])
    assert status == 403

    async def snapshot() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(database_url, server_settings={"search_path": "headrace"})
        try:
            rows = await conn.fetch(
                "SELECT id, job_id, agent_name, event_type, payload::text, timestamp, parent_id FROM traces ORDER BY id"
            )
        finally:
            await conn.close()
        return [tuple(r) for r in rows]

    live = await snapshot()
    assert len(live) == 12 and sum(row[-1] is None for row in live) == 2  # the two task_starts are roots
    assert s.api.bus is not None
    await rebuild.rebuild(s.api.bus, database_url)
    assert await snapshot() == live


async def test_health_is_open_and_checks_each_component(make_config: Any, start_stack: Any) -> None:
    s: Stack = await start_stack(make_config())
    status, body = await s.client.get("/api/health", token=None)
    assert status == 200, body
    assert body["status"] == "ok" and body["version"]
    assert {name: c["status"] for name, c in body["checks"].items()} == {
        "database": "ok",
        "storage": "ok",
        "message_bus": "ok",
    }
    assert body["checks"]["database"]["type"] == "postgresql"
    assert body["components"]["database"] == "PostgreSQL"  # Laddr's labels, real checks under `checks`

"""Laddr agents over HTTP against a fake OpenAI-compatible server: a two-tool run (child jobs,
tree, traces, token totals), chat (completed, submitted, timeout), replay both ways, an
unreachable LLM, and agent liveness going stale after its runner process is SIGKILLed."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

from services.api import state as api_state
from services.api import submit
from services.core import schemas, subjects
from services.runner.service import Runner
from tests.support import fake_llm, infra, laddr, stack
from tests.support.fake_llm import FakeLLM
from tests.support.stack import TOKENS, Stack


async def test_two_tool_agent_run_is_a_job_tree_with_traces_and_token_totals(
    make_config: Any, start_stack: Any, fake: FakeLLM
) -> None:
    config = make_config(
        plugins=laddr.plugins(),
        agents={"researcher": laddr.agent(fake, "m-tools", tools=["echo_py.poll", "echo.poll"])},
    )
    s: Stack = await start_stack(config)
    fake.script(
        "m-tools",
        fake_llm.tool_calls(
            ("echo_py__poll", {"message": "one"}),
            ("echo__poll", {"message": "two"}),
            prompt_tokens=20,
            completion_tokens=8,
        ),
        fake_llm.text("both tools answered", prompt_tokens=30, completion_tokens=6),
    )
    status, body = await s.client.post(
        "/api/jobs",
        json={"pipeline_name": "researcher", "inputs": {"task": "use both tools"}},
        token=TOKENS["laddr_rw"][0],
    )  # write tools need plugin:rw too
    assert status == 200 and body["status"] == "queued" and body["pipeline_name"] == "researcher", body
    job_id = body["job_id"]
    done = await s.client.wait_job(job_id)
    assert done["status"] == "succeeded", done
    assert done["plugin"] == "agent" and done["command"] == "researcher"

    first, second = fake.requests_for("m-tools")
    assert first["messages"][0]["role"] == "system" and "m-tools role" in first["messages"][0]["content"]
    assert first["messages"][1] == {"role": "user", "content": "use both tools"}
    assert sorted(t["function"]["name"] for t in first["tools"]) == ["echo__poll", "echo_py__poll"]
    assert first["tools"][0]["function"]["parameters"] == {
        "type": "object",
        "properties": {"message": {"type": "string"}},
    }
    assert [m["content"] for m in second["messages"] if m["role"] == "tool"] == ["Echoed: one", "Echoed: two"]
    assert fake.headers[0]["Authorization"] == "Bearer sk-fake"

    await laddr.projected(s)
    children = [
        dict(r)
        for r in await s.api.pool.fetch(
            "SELECT plugin, command, status, submitted_by, correlation_id, payload FROM jobs WHERE parent_job_id = $1 "
            "ORDER BY plugin",
            job_id,
        )
    ]
    assert [(c["plugin"], c["status"], c["submitted_by"], c["correlation_id"]) for c in children] == [
        ("echo", "succeeded", "agent", job_id),
        ("echo_py", "succeeded", "agent", job_id),
    ]
    assert [c["payload"] for c in children] == [{"message": "two"}, {"message": "one"}]
    status, tree = await s.client.get(f"/job/{job_id}/tree")
    assert status == 200 and tree[0]["plugin"] == "agent" and len(tree) == 3
    assert all(n["parent_job_id"] == job_id for n in tree[1:])

    trail = await laddr.traces(s, job_id)
    kinds = [t["event_type"] for t in trail]
    assert kinds[:3] == ["task_start", "llm_usage", "autonomous_think"]
    # the two calls of one message run at once: their traces interleave
    assert sorted(kinds[3:7]) == ["tool_call", "tool_call", "tool_result", "tool_result"]
    assert kinds[7:] == ["llm_usage", "autonomous_think", "task_complete"]
    assert all(t["agent_name"] == "researcher" and t["job_id"] == job_id for t in trail)
    assert trail[1]["payload"] == {
        "provider": "openai",
        "model": "m-tools",
        "iteration": 1,
        "worker": "researcher",
        "prompt_tokens": 20,
        "completion_tokens": 8,
        "total_tokens": 28,
    }
    results = {t["payload"]["tool"]: t["payload"] for t in trail if t["event_type"] == "tool_result"}
    assert results["echo_py.poll"]["result"] == "Echoed: one" and results["echo.poll"]["result"] == "Echoed: two"
    assert results["echo_py.poll"]["child_job_id"] in {t["job_id"] for t in tree}
    assert [t["id"] for t in trail] == sorted(t["id"] for t in trail)

    status, view = await s.client.get(f"/api/jobs/{job_id}", token=TOKENS["jobs_ro"][0])
    assert status == 200
    assert view["status"] == "completed" and view["pipeline_name"] == "researcher" and view["error"] is None
    assert view["inputs"] == {"task": "use both tools"}
    assert view["outputs"] == "both tools answered" and view["details"]["iterations"] == 2
    assert view["token_usage"] == {
        "prompt_tokens": 50,
        "completion_tokens": 14,
        "total_tokens": 64,
        "by_model": [
            {
                "provider": "openai",
                "model": "m-tools",
                "prompt_tokens": 50,
                "completion_tokens": 14,
                "total_tokens": 64,
                "calls": 2,
            }
        ],
    }
    status, listed = await s.client.get("/api/jobs?limit=10")
    assert status == 200 and [j["job_id"] for j in listed] == [job_id]  # root jobs only
    assert listed[0]["status"] == "completed"

    # every trace event on the wire matches its schema
    assert s.api.bus is not None
    for _, env in await s.api.bus.history(subjects.EVENTS, f"evt.trace.{job_id}.>"):
        assert schemas.violations("events/trace", env.data) == [], env


async def test_chat_completed_submitted_and_timeout(make_config: Any, start_stack: Any, fake: FakeLLM) -> None:
    s: Stack = await start_stack(
        make_config(
            plugins=laddr.plugins(),
            agents={"writer": laddr.agent(fake, "m-writer"), "slow": laddr.agent(fake, "m-slow", llm_timeout="60s")},
        )
    )
    status, body = await s.client.get("/api/agents/writer/chat?message=hello%20there", token=TOKENS["jobs_ro"][0])
    assert status == 200, body
    assert body["status"] == "completed" and body["result"] == "m-writer: hello there" and body["agent"] == "writer"
    assert body["usage"]["total_tokens"] == 10

    status, body = await s.client.get("/api/agents/writer/chat?message=later&wait=false")
    assert status == 200 and body["status"] == "submitted"
    done = await s.client.wait_job(body["task_id"])
    assert done["result"]["result"]["result"] == "m-writer: later"

    release = asyncio.Event()  # the answer comes once the test has seen the run still going
    fake.script("m-slow", fake_llm.held(release, fake_llm.text("late answer")))
    status, body = await s.client.get("/api/agents/slow/chat?message=hurry&timeout=0.3")
    assert status == 200 and body["status"] == "timeout" and "did not respond in time" in body["message"]
    running = await s.client.wait_job(body["task_id"], {"running"})
    assert running["status"] == "running"
    release.set()
    done = await s.client.wait_job(body["task_id"])
    assert done["status"] == "succeeded" and done["result"]["result"]["result"] == "late answer"

    for path, code in [
        ("/api/agents/nobody/chat?message=x", 404),
        ("/api/agents/writer/chat", 422),
        ("/api/agents/writer/chat?message=x&timeout=abc", 422),
        ("/api/agents/writer/chat?message=x&wait=maybe", 422),
    ]:
        status, body = await s.client.get(path)
        assert status == code and body["error"], (path, body)
    status, _ = await s.client.get("/api/agents/writer/chat?message=x", token=TOKENS["plugin_rw"][0])
    assert status == 403


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_llm_is_a_task_error_and_a_dead_job_after_retries(make_config: Any, start_stack: Any) -> None:
    dead_llm = {"base_url": f"http://127.0.0.1:{free_port()}/v1", "model": "gone", "timeout": "2s"}
    s: Stack = await start_stack(
        make_config(plugins=laddr.plugins(), agents={"lost": {"role": "Lost", "llm": dead_llm}})
    )
    status, body = await s.client.post("/api/jobs", json={"pipeline_name": "lost", "inputs": {"message": "hi"}})
    assert status == 200
    done = await s.client.wait_job(body["job_id"], timeout_s=30)
    assert done["status"] == "dead" and done["attempt"] == 2
    assert "LLM unreachable" in done["last_error"]
    trail = await laddr.traces(s, body["job_id"])
    assert [t["event_type"] for t in trail] == ["task_start", "task_error", "task_start", "task_error"]
    assert "LLM generation failed: LLM unreachable" in trail[1]["payload"]["error"]
    assert trail[1]["payload"]["retryable"] is True
    status, view = await s.client.get(f"/api/jobs/{body['job_id']}")
    assert view["status"] == "failed" and "unreachable" in view["error"] and view["outputs"] == {"error": view["error"]}


async def test_replay_reexecutes_or_returns_the_recorded_result(
    make_config: Any, start_stack: Any, fake: FakeLLM
) -> None:
    s: Stack = await start_stack(make_config(plugins=laddr.plugins(), agents={"echoer": laddr.agent(fake, "m-r")}))
    status, body = await s.client.post("/api/jobs", json={"pipeline_name": "echoer", "inputs": {"message": "again"}})
    original = body["job_id"]
    await s.client.wait_job(original)
    assert len(fake.requests) == 1

    status, recorded = await s.client.post(
        f"/api/jobs/{original}/replay", json={"reexecute": False}, token=TOKENS["jobs_rw"][0]
    )
    assert status == 200 and recorded["job_id"] == original and recorded["replayed"] is True
    assert recorded["status"] == "completed" and recorded["result"] == "m-r: again"
    assert len(fake.requests) == 1  # nothing ran

    status, replayed = await s.client.post(f"/api/jobs/{original}/replay", json={"reexecute": True})
    assert status == 200 and replayed["replayed"] is True and replayed["original_job_id"] == original
    assert replayed["job_id"] != original
    done = await s.client.wait_job(replayed["job_id"])
    assert done["status"] == "succeeded" and done["submitted_by"] == "replay" and len(fake.requests) == 2
    status, view = await s.client.get(f"/api/jobs/{replayed['job_id']}")
    assert view["original_job_id"] == original and view["inputs"] == {"message": "again"}
    assert view["outputs"] == "m-r: again"

    # a plugin job replays too
    plugin_job = await s.client.submit("echo_py", "poll", {"message": "p"})
    await s.client.wait_job(plugin_job)
    status, again = await s.client.post(f"/api/jobs/{plugin_job}/replay", json={"reexecute": True})
    assert status == 200
    assert (await s.client.wait_job(again["job_id"]))["result"]["result"] == "Echoed: p"

    for path, payload, code, token in [
        (f"/api/jobs/{original}/replay", {"reexecute": "maybe"}, 422, None),
        (f"/api/jobs/{original}/replay", {}, 403, TOKENS["jobs_ro"][0]),
    ]:
        status, body = await s.client.post(path, json=payload, token=token or "default")
        assert status == code, (path, body)


async def test_bad_laddr_requests_are_clear_4xx(make_config: Any, start_stack: Any, fake: FakeLLM) -> None:
    s: Stack = await start_stack(
        make_config(
            plugins=laddr.plugins(),
            agents={"ok": laddr.agent(fake, "m"), "broken": laddr.agent(fake, "m", tools=["echo.nope", "ghost.poll"])},
        )
    )
    cases = [
        ({"inputs": {}}, 422, "pipeline_name"),
        ({"pipeline_name": "nobody", "inputs": {}}, 404, "no agent or pipeline"),
        ({"pipeline_name": "ok", "inputs": [1]}, 422, "inputs"),
        ({"pipeline_name": "broken", "inputs": {}}, 409, "misconfigured"),
    ]
    for payload, code, needle in cases:
        status, body = await s.client.post("/api/jobs", json=payload)
        assert status == code and needle in body["error"], (payload, body)
    status, body = await s.client.post("/api/jobs", data="not json", headers={"Content-Type": "application/json"})
    assert status == 422
    status, _ = await s.client.post("/api/jobs", json={"pipeline_name": "ok"}, token=TOKENS["jobs_ro"][0])
    assert status == 403
    status, _ = await s.client.get("/api/jobs", token=None)
    assert status == 401
    status, body = await s.client.get("/api/jobs/nope")
    assert status == 404
    status, body = await s.client.get("/api/agents", token=TOKENS["jobs_ro"][0])
    broken = next(a for a in body["agents"] if a["name"] == "broken")
    assert broken["problems"] == [
        "tool 'echo.nope': plugin 'echo' has no command 'nope'",
        "tool 'ghost.poll': no plugin 'ghost'",
    ]
    # the dispatcher rejects a submit that bypasses the API, naming the problem
    assert s.api.app is not None
    job_id = await submit.submit_job(s.api.app[api_state.STATE], plugin="agent", command="broken", payload={})
    done = await s.client.wait_job(job_id, {"failed"})
    assert "misconfigured" in done["last_error"] and "ghost" in done["last_error"]


async def test_agent_liveness_goes_stale_after_its_runner_is_sigkilled(
    make_config: Any, nats_url: str, database_url: str, tmp_path: Path
) -> None:
    service = {"name": "headrace-test", "log_level": "warning", "max_workers": 4, "heartbeat_interval": "0.3s"}
    config = make_config(service=service, plugins=laddr.plugins(), agents={"demo": laddr.agent(None, "echo")})
    s = Stack(config)
    s.runner = Runner(config, plugins=["echo", "echo_py"])  # serves no agent: the process below does
    s.services[2] = s.runner
    await s.start()
    runner = stack.ServiceProcess(
        "runner",
        config_path=config.path,
        nats_url=nats_url,
        database_url=database_url,
        extra_args=["--plugin", "agent"],
        log_path=tmp_path / "runner.log",
    ).start()
    try:

        async def demo(status: str) -> dict[str, Any] | None:
            code, body = await s.client.get("/api/agents")
            assert code == 200, body
            entry = next(a for a in body["agents"] if a["name"] == "demo")
            return entry if entry["status"] == status else None

        stale = await demo("stale")
        assert stale is not None and stale["last_seen"] is None
        active = await infra.wait_until(lambda: demo("active"), timeout_s=30, what="the agent to be active")
        assert active["offline"] is True and active["tools"] == []
        status, body = await s.client.get("/api/agents/demo/chat?message=are%20you%20there")
        assert status == 200 and body["result"] == "[offline echo] are you there"
        status, metrics = await s.client.get("/api/metrics")
        assert metrics["active_agents_count"] == 1
        runner.kill()
        stale = await infra.wait_until(lambda: demo("stale"), timeout_s=10, what="the agent to go stale")
        assert stale["last_seen"] is not None and stale["last_seen"] >= active["last_seen"]
        await asyncio.sleep(0.5)
        _, metrics = await s.client.get("/api/metrics")
        assert metrics["active_agents_count"] == 0
    finally:
        runner.kill()
        await s.stop()


async def test_pipeline_name_resolves_to_a_pipeline_when_no_agent_has_it(
    make_config: Any, start_stack: Any, fake: FakeLLM
) -> None:
    pipes = [{"name": "greet", "steps": [{"id": "hello", "uses": "echo_py"}]}]
    s: Stack = await start_stack(
        make_config(plugins=laddr.plugins(), pipelines=pipes, agents={"helper": laddr.agent(fake, "m-h")})
    )
    status, body = await s.client.post("/api/jobs", json={"pipeline_name": "greet", "inputs": {"name": "Ada"}})
    assert status == 200 and body["pipeline_name"] == "greet", body
    done = await s.client.wait_job(body["job_id"])
    assert done["status"] == "succeeded" and done["plugin"] == "pipeline"
    status, view = await s.client.get(f"/api/jobs/{body['job_id']}")
    assert view["pipeline_name"] == "greet" and view["status"] == "completed" and view["inputs"] == {"name": "Ada"}
    assert view["token_usage"]["total_tokens"] == 0


async def test_an_agent_that_never_answers_stops_at_max_iterations(
    make_config: Any, start_stack: Any, fake: FakeLLM
) -> None:
    s: Stack = await start_stack(
        make_config(
            plugins=laddr.plugins(),
            agents={"looper": laddr.agent(fake, "m-loop", tools=["echo_py.poll"], max_iterations=2)},
        )
    )
    for _ in range(2):
        fake.script("m-loop", fake_llm.tool_calls(("echo_py__poll", {"message": "again"})))
    status, body = await s.client.post("/api/jobs", json={"pipeline_name": "looper", "inputs": {"message": "go"}})
    assert status == 200
    done = await s.client.wait_job(body["job_id"], {"dead"})
    assert done["attempt"] == 1 and "reached max_iterations (2)" in done["last_error"]
    trail = await laddr.traces(s, body["job_id"])
    assert [t["event_type"] for t in trail].count("tool_call") == 2 and trail[-1]["event_type"] == "task_error"

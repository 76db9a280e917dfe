"""No scope leaks through another door: work a token may not start directly (POST /plugin, POST
/pipeline) it may not start through a chat's tool calls, a Laddr job, a replay, a prompt's agents or
a retry either. Over HTTP against the real stack and a fake OpenAI-compatible server; the
dispatcher's backstop and the retry path are checked on its pure decisions."""

from __future__ import annotations

from typing import Any

import orjson

from services.core import catalog as catalog_mod
from services.core import envelope, job_waits, scopes, subjects
from services.dispatcher import decisions, retries
from tests.support import fake_llm, laddr
from tests.support.fake_llm import FakeLLM
from tests.support.stack import TOKENS, Stack

PIPELINES = [{"name": "shout", "steps": [{"id": "one", "uses": "echo.poll"}]}]


async def _tool_children(s: Stack, job_id: str) -> list[dict[str, Any]]:
    await laddr.projected(s)
    assert s.api.pool is not None
    return [
        dict(r)
        for r in await s.api.pool.fetch(
            "SELECT plugin, command, status FROM jobs WHERE parent_job_id = $1 ORDER BY plugin, command", job_id
        )
    ]


def _tool_messages(fake: FakeLLM, model: str) -> list[Any]:
    return [
        orjson.loads(m["content"]) if m["content"].startswith("{") else m["content"]
        for r in fake.requests_for(model)
        for m in r["messages"]
        if m["role"] == "tool"
    ]


async def test_chat_with_jobs_ro_never_runs_a_write_tool(make_config: Any, start_stack: Any, fake: FakeLLM) -> None:
    s: Stack = await start_stack(
        make_config(
            plugins=laddr.plugins(), agents={"helper": laddr.agent(fake, "m-chat", tools=["echo.poll", "echo.health"])}
        )
    )
    fake.script("m-chat", fake_llm.tool_calls(("echo__poll", {"message": "write!"})), fake_llm.text("could not write"))
    status, body = await s.client.get("/api/agents/helper/chat?message=please%20write", token=TOKENS["jobs_ro"][0])
    assert status == 200 and body["status"] == "completed", body
    # the model was told, and nothing ran: no child job, no cache
    (told,) = _tool_messages(fake, "m-chat")
    assert told["code"] == "forbidden" and "plugin:rw" in told["error"] and "echo.poll" in told["error"], told
    assert await _tool_children(s, body["task_id"]) == []
    trail = await laddr.traces(s, body["task_id"])
    errors = [t["payload"] for t in trail if t["event_type"] == "tool_error"]
    assert [(e["tool"], e["code"]) for e in errors] == [("echo.poll", "forbidden")]
    assert "tool_call" not in [t["event_type"] for t in trail]

    # a read tool needs plugin:ro, which jobs:ro does not hold either …
    fake.script("m-chat", fake_llm.tool_calls(("echo__health", {})), fake_llm.text("no health"))
    status, body = await s.client.get("/api/agents/helper/chat?message=health", token=TOKENS["jobs_ro"][0])
    assert status == 200 and await _tool_children(s, body["task_id"]) == []
    # … and a token that may call both directly gets both run
    fake.script(
        "m-chat", fake_llm.tool_calls(("echo__poll", {"message": "w"}), ("echo__health", {})), fake_llm.text("did both")
    )
    status, body = await s.client.get("/api/agents/helper/chat?message=both", token=TOKENS["laddr_rw"][0])
    assert status == 200 and body["result"] == "did both", body
    assert [(c["plugin"], c["command"], c["status"]) for c in await _tool_children(s, body["task_id"])] == [
        ("echo", "health", "succeeded"),
        ("echo", "poll", "succeeded"),
    ]


async def test_prompt_agents_carry_the_callers_authority(make_config: Any, start_stack: Any, fake: FakeLLM) -> None:
    s: Stack = await start_stack(
        make_config(plugins=laddr.plugins(), agents={"poster": laddr.agent(fake, "m-post", tools=["echo.poll"])})
    )
    fake.script("m-post", fake_llm.tool_calls(("echo__poll", {"message": "x"})), fake_llm.text("done"))
    status, body = await s.client.post(
        "/api/prompts", json={"prompt_name": "poster", "inputs": {"task": "post"}}, token=TOKENS["jobs_rw"][0]
    )
    assert status == 200, body
    done = await s.client.wait_job(body["prompt_id"], timeout_s=30)
    assert done["status"] == "succeeded"
    (agent_job,) = await _tool_children(s, body["prompt_id"])
    assert agent_job["plugin"] == "agent"
    assert _tool_messages(fake, "m-post")[0]["code"] == "forbidden"
    await laddr.projected(s)
    assert s.api.pool is not None
    assert await s.api.pool.fetchval("SELECT count(*) FROM jobs WHERE plugin = 'echo'") == 0


async def test_laddr_job_replay_and_retry_need_the_scope_of_what_they_run(make_config: Any, start_stack: Any) -> None:
    s: Stack = await start_stack(
        make_config(plugins={"echo": {}, "exit78": {"retry": {"max_attempts": 1}}}, pipelines=PIPELINES)
    )
    jobs_rw, both = TOKENS["jobs_rw"][0], TOKENS["laddr_rw"][0]
    # the direct routes answer 403 …
    assert (await s.client.post("/pipeline/shout", json={}, token=jobs_rw))[0] == 403
    assert (await s.client.post("/plugin/echo/poll", json={}, token=jobs_rw))[0] == 403
    # … so a Laddr job naming the pipeline does too
    status, body = await s.client.post("/api/jobs", json={"pipeline_name": "shout", "inputs": {}}, token=jobs_rw)
    assert status == 403 and body["required_scopes"] == ["plugin:rw"], body
    status, body = await s.client.post("/api/jobs", json={"pipeline_name": "shout", "inputs": {}}, token=both)
    assert status == 200, body

    poll = await s.client.submit("echo", "poll", {"message": "once"})
    await s.client.wait_job(poll)
    status, body = await s.client.post(f"/api/jobs/{poll}/replay", json={"reexecute": True}, token=jobs_rw)
    assert status == 403 and "plugin:rw" in body["error"], body
    status, body = await s.client.post(f"/api/jobs/{poll}/replay", json={"reexecute": False}, token=jobs_rw)
    assert status == 200  # returns the recorded result; runs nothing
    status, body = await s.client.post(f"/api/jobs/{poll}/replay", json={"reexecute": True}, token=both)
    assert status == 200, body

    health = await s.client.submit("echo", "health")
    await s.client.wait_job(health)
    status, _ = await s.client.post(f"/api/jobs/{health}/replay", json={"reexecute": True}, token=jobs_rw)
    assert status == 403  # a read command needs plugin:ro
    status, _ = await s.client.post(f"/api/jobs/{health}/replay", json={"reexecute": True}, token=both)
    assert status == 200

    dead = await s.client.submit("exit78", "poll")
    assert (await s.client.wait_job(dead))["status"] == "dead"
    # no wait for the projection: retry decides on services/api/jobs.py fresh_job, which reads the job from
    # the event log while its row is not settled, so a lagging row cannot turn this dead job into a 409
    status, body = await s.client.post(f"/job/{dead}/retry", token=jobs_rw)
    assert status == 403 and "plugin:rw" in body["error"], body
    status, body = await s.client.post(f"/job/{dead}/retry", token=both)
    assert status == 202 and body["retry_of"] == dead, body


def _submit(plugin: str, command: str, authority: scopes.Authority | None) -> envelope.Envelope:
    data: dict[str, Any] = {"plugin": plugin, "command": command, "payload": {}, "submitted_by": "agent"}
    if authority is not None:
        data["authority"] = authority.to_data()
    return envelope.make("job.submit", source="test", job_id="j1", id="j1:submit", data=data)


async def test_dispatcher_rejects_a_submit_beyond_its_authority(make_config: Any) -> None:
    config = make_config()
    catalog = catalog_mod.scan(config.plugin_roots)
    reader = scopes.Authority(principal="reader", scopes=frozenset({"plugin:ro", "jobs:rw"}))
    ((_, rejected),) = decisions.decide_submit(_submit("echo", "poll", reader), catalog, config, source="t")
    assert rejected.type == "job.rejected" and rejected.data["reason"].startswith(
        "forbidden: token 'reader' lacks plugin:rw"
    ), rejected.data
    out = decisions.decide_submit(_submit("echo", "health", reader), catalog, config, source="t")
    assert [env.type for _, env in out] == ["job.queued", "job.work"]
    # the authority rides on the queued event and the work item; the system's own jobs carry none
    assert out[0][1].data["authority"] == out[1][1].data["authority"] == reader.to_data()
    out = decisions.decide_submit(_submit("echo", "poll", None), catalog, config, source="t")
    assert [env.type for _, env in out] == ["job.queued", "job.work"] and out[1][1].data["authority"] is None
    # a malformed authority grants nothing
    bad = _submit("echo", "health", None)
    bad.data["authority"] = {"scopes": "*"}
    ((_, rejected),) = decisions.decide_submit(bad, catalog, config, source="t")
    assert rejected.type == "job.rejected"


async def test_the_dispatchers_retry_keeps_the_authority(make_config: Any) -> None:
    config = make_config(plugins={"echo": {"retry": {"max_attempts": 3, "backoff_base": "1s"}}})
    catalog = catalog_mod.scan(config.plugin_roots)
    caller = scopes.Authority(principal="caller", scopes=frozenset({"plugin:rw"}))
    _, queued = decisions.decide_submit(_submit("echo", "poll", caller), catalog, config, source="t")[0]
    failed = envelope.make(
        "job.failed",
        source="t",
        job_id="j1",
        id="j1:1:failed",
        data={"plugin": "echo", "command": "poll", "attempt": 1, "error": "boom", "retry": True},
    )
    (_, scheduled), (_, parked) = retries.decide_outcome(failed, queued, config, source="t")
    assert scheduled.type == "job.retry_scheduled" and parked.data["authority"] == caller.to_data()


async def test_dispatcher_rejects_a_pipeline_run_beyond_its_authority(make_config: Any, start_stack: Any) -> None:
    s: Stack = await start_stack(make_config(pipelines=PIPELINES))
    assert s.api.bus is not None
    outcomes = {}
    for root, held in (("root-ro", {"jobs:rw", "plugin:ro"}), ("root-rw", {"plugin:rw"})):
        authority = scopes.Authority(principal=root, scopes=frozenset(held))
        cmd = envelope.make(
            "pipeline.run",
            source="test",
            job_id=root,
            id=f"{root}:run",
            correlation_id=root,
            data={"pipeline": "shout", "payload": {}, "submitted_by": "api", "authority": authority.to_data()},
        )
        final = await job_waits.wait_final(
            s.api.bus,
            root,
            timeout_s=20,
            before=lambda c=cmd, r=root: s.api.bus.publish(subjects.pipeline_command(r), c),
        )
        assert final is not None
        outcomes[root] = (final.type, final.data.get("reason"))
    assert outcomes["root-ro"][0] == "job.rejected" and "lacks plugin:rw" in outcomes["root-ro"][1], outcomes
    assert outcomes["root-rw"][0] == "job.succeeded", outcomes

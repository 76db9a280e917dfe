"""POST /api/prompts/{prompt_id}/cancel over real HTTP against the fake LLM (laddr-conformance.md
§1.1 row 10, §1.11): Laddr's 200 answer in every case, a real cancel of the running agent and of its
running tool job (decided by the dispatcher), the prompt ending `cancelled`, and the agent loop
stopping between iterations when the cancel is only in the log (its signal lost).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from services.core import envelope, subjects
from tests.support import fake_llm, infra, laddr
from tests.support.fake_llm import FakeLLM
from tests.support.stack import TOKENS, Stack

UNKNOWN = "00000000-0000-4000-8000-000000000000"


async def stack(make_config: Any, start_stack: Any, fake: FakeLLM) -> Stack:
    agents = {
        "slow": laddr.agent(fake, "m-slow"),
        "worker": laddr.agent(fake, "m-worker", tools=["sleeper.poll", "echo_py.poll"]),
    }
    s: Stack = await start_stack(make_config(plugins=laddr.plugins(sleeper={}), agents=agents))
    return s


def canceled(prompt_id: str) -> dict[str, Any]:
    return {"ok": True, "prompt_id": prompt_id, "status": "canceled"}


async def running_step(s: Stack, prompt_id: str) -> dict[str, Any]:
    async def step() -> dict[str, Any] | None:
        _, view = await s.client.get(f"/api/prompts/{prompt_id}")
        steps = (view or {}).get("steps") or []
        return steps[0] if steps and steps[0]["status"] == "running" else None

    return await infra.wait_until(step, timeout_s=15, what="the prompt's agent to run")


async def children(s: Stack, job_id: str) -> list[dict[str, Any]]:
    _, tree = await s.client.get(f"/job/{job_id}/tree")
    return [node for node in tree if node.get("parent_job_id") == job_id]


async def test_row10_cancel_of_a_running_prompt_stops_its_agent(
    make_config: Any, start_stack: Any, fake: FakeLLM
) -> None:
    s = await stack(make_config, start_stack, fake)
    fake.script("m-slow", fake_llm.held(asyncio.Event(), fake_llm.text("too late")))  # the LLM never answers
    _, body = await s.client.post("/api/prompts", json={"prompt_name": "slow", "inputs": {"query": "take your time"}})
    prompt_id = body["prompt_id"]
    step = await running_step(s, prompt_id)
    started = time.monotonic()
    status, answer = await s.client.post(f"/api/prompts/{prompt_id}/cancel", token=TOKENS["jobs_rw"][0])
    assert status == 200 and answer == canceled(prompt_id)
    assert time.monotonic() - started < 3.0  # the run's end answered it, not CANCEL_WAIT_S running out
    status, view = await s.client.get(f"/api/prompts/{prompt_id}")  # right after, as Laddr's row shows
    assert status == 200 and view["status"] == "cancelled", view
    assert view["outputs"] == {"status": "canceled", "result": "Execution canceled by user."}  # Laddr's words
    agent = await s.client.wait_job(step["job_id"], {"cancelled"})
    assert agent["status"] == "cancelled"
    trail = await laddr.traces(s, prompt_id)
    requested = [t for t in trail if t["event_type"] == "task_cancel_requested"]
    assert [(t["agent_name"], t["payload"]["by"]) for t in requested] == [("api", "user")]
    assert trail[-1]["event_type"] == "task_cancelled"
    assert (await laddr.traces(s, step["job_id"]))[-1]["event_type"] == "task_cancelled"
    assert len(fake.requests_for("m-slow")) == 1


async def test_row10_cancel_stops_the_running_tool_job(make_config: Any, start_stack: Any, fake: FakeLLM) -> None:
    s = await stack(make_config, start_stack, fake)
    fake.script("m-worker", fake_llm.tool_calls(("sleeper__poll", {"seconds": 30})), fake_llm.text("never"))
    _, body = await s.client.post("/api/prompts", json={"prompt_name": "worker", "inputs": {"query": "sleep"}})
    prompt_id = body["prompt_id"]
    step = await running_step(s, prompt_id)

    async def tool_running() -> dict[str, Any] | None:
        found = await children(s, step["job_id"])
        return found[0] if found and found[0]["status"] == "running" else None

    tool = await infra.wait_until(tool_running, timeout_s=15, what="the agent's tool job to run")
    assert tool["plugin"] == "sleeper"
    status, answer = await s.client.post(f"/api/prompts/{prompt_id}/cancel")
    assert status == 200 and answer == canceled(prompt_id)
    assert (await s.client.wait_job(prompt_id, {"cancelled"}, timeout_s=10))["status"] == "cancelled"
    assert (await s.client.wait_job(step["job_id"], {"cancelled"}, timeout_s=10))["status"] == "cancelled"
    assert (await s.client.wait_job(tool["job_id"], {"cancelled"}, timeout_s=10))["status"] == "cancelled"
    assert len(fake.requests_for("m-worker")) == 1  # the loop never went on to a second iteration


async def test_row10_unknown_id_answers_200_and_records_nothing(
    make_config: Any, start_stack: Any, fake: FakeLLM
) -> None:
    s = await stack(make_config, start_stack, fake)
    status, answer = await s.client.post(f"/api/prompts/{UNKNOWN}/cancel")
    assert status == 200 and answer == canceled(UNKNOWN)
    await laddr.projected(s)
    status, trail = await s.client.get(f"/api/traces?job_id={UNKNOWN}")
    assert status == 200 and trail["traces"] == []
    status, _ = await s.client.post(f"/api/prompts/{UNKNOWN}/cancel", token=TOKENS["jobs_ro"][0])
    assert status == 403


async def test_row10_a_completed_prompt_stays_completed(make_config: Any, start_stack: Any, fake: FakeLLM) -> None:
    s = await stack(make_config, start_stack, fake)
    _, body = await s.client.post("/api/prompts", json={"prompt_name": "slow", "inputs": {"query": "quick"}})
    prompt_id = body["prompt_id"]
    await s.client.wait_job(prompt_id)
    status, answer = await s.client.post(f"/api/prompts/{prompt_id}/cancel")
    assert status == 200 and answer == canceled(prompt_id)
    status, view = await s.client.get(f"/api/prompts/{prompt_id}")
    # Laddr overwrites `completed` with `canceled`; here what has ended stays as it ended
    assert view["status"] == "completed" and view["error"] is None
    assert view["outputs"] == "m-slow: quick"  # the answer itself, as Laddr stores it


async def test_row10_a_batch_task_id_cancels_that_agent_run(make_config: Any, start_stack: Any, fake: FakeLLM) -> None:
    s = await stack(make_config, start_stack, fake)
    fake.script("m-slow", fake_llm.held(asyncio.Event(), fake_llm.text("too late")))  # the LLM never answers
    _, batch = await s.client.post("/api/agents/slow/batch", json={"tasks": [{"message": "x"}]})
    (task_id,) = batch["task_ids"]
    await s.client.wait_job(task_id, {"running"})
    status, answer = await s.client.post(f"/api/prompts/{task_id}/cancel")
    assert status == 200 and answer == canceled(task_id)
    status, view = await s.client.get(f"/api/batches/{batch['batch_id']}")
    assert view["status"] == "failed", view
    result = view["outputs"]["results"][task_id]
    assert result["status"] == "cancelled" and result["response"]["status"] == "cancelled"


async def test_s111_agent_loop_notices_a_logged_cancel_between_iterations(
    make_config: Any, start_stack: Any, fake: FakeLLM
) -> None:
    """The dispatcher's signal is not stored; a cancel whose signal never reached the runner is still
    in the log (`job.cancel_requested`), and the loop checks it before each iteration."""
    s = await stack(make_config, start_stack, fake)
    release = asyncio.Event()  # iteration 1's answer waits until the cancel is in the log
    fake.script(
        "m-worker",
        fake_llm.held(release, fake_llm.tool_calls(("echo_py__poll", {"message": "m"}))),
        fake_llm.text("never asked"),
    )
    _, batch = await s.client.post("/api/agents/worker/batch", json={"tasks": [{"message": "go"}]})
    (job_id,) = batch["job_ids"]

    async def asked() -> bool:
        return bool(fake.requests_for("m-worker"))

    await infra.wait_until(asked, timeout_s=15, what="the agent's first LLM request")  # iteration 1 is under way
    assert s.api.bus is not None
    # what the dispatcher stores for a running job, without its ctl.cancel signal
    requested = envelope.make(
        "job.cancel_requested",
        source="test",
        job_id=job_id,
        id=f"{job_id}:cancel_requested",
        data={"reason": "signal lost", "status": "running"},
    )
    await s.api.bus.publish(subjects.job_event(job_id, "cancel_requested"), requested)
    release.set()
    done = await s.client.wait_job(job_id, {"cancelled", "succeeded"}, timeout_s=15)
    assert done["status"] == "cancelled", done
    assert len(fake.requests_for("m-worker")) == 1
    trail = await laddr.traces(s, job_id)
    assert [t["event_type"] for t in trail][-3:] == ["tool_call", "tool_result", "task_cancelled"]
    assert trail[-1]["payload"]["iteration"] == 2

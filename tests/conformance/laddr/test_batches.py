"""Laddr batches over real HTTP against the fake LLM (laddr-conformance.md §1.1 rows 13-16, §1.15):
each task is a normal agent job, progress and status come from the member jobs, wait:true waits for
all tasks at once, add-tasks extends open batches only, and `headrace rebuild` re-projects the batches.

Validation errors are FastAPI's 422 whose `loc` names the field (`invalid` below).
"""

from __future__ import annotations

import asyncio
from typing import Any

from services.core import subjects
from services.projector import rebuild
from tests.support import fake_llm, infra, laddr, readmodels
from tests.support.fake_llm import FakeLLM
from tests.support.stack import TOKENS, Stack

BATCH_KEYS = {"batch_id", "agent_name", "status", "task_count", "task_ids", "job_ids", "trace_ids"}
ROW_KEYS = {"batch_id", "agent_name", "status", "task_count", "job_ids", "task_ids", "created_at", "completed_at"}


async def stack(make_config: Any, start_stack: Any, fake: FakeLLM) -> Stack:
    # the slow agent's replies may be held (fake_llm.held) while a test acts: a request may wait long
    agents = {"echo": laddr.agent(fake, "m-echo"), "slow": laddr.agent(fake, "m-slow", llm_timeout="60s")}
    s: Stack = await start_stack(make_config(plugins=laddr.plugins(), agents=agents))
    return s


def detail(body: Any) -> str:
    """The error text, in Headrace's (`error`) or Laddr's (`detail`) body."""
    return str(body.get("detail") or body.get("error")) if isinstance(body, dict) else str(body)


def invalid(status: int, body: Any, field: str) -> bool:
    return status == 422 and any(field in item.get("loc", []) for item in body["detail"])


async def finished(s: Stack, batch_id: str, timeout_s: float = 20) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        status, body = await s.client.get(f"/api/batches/{batch_id}")
        assert status == 200, body
        return body if body["status"] in ("completed", "failed") else None

    return await infra.wait_until(done, timeout_s=timeout_s, what=f"batch {batch_id} to finish")


async def test_row13_batch_of_two_is_two_agent_jobs_with_their_own_ids(
    make_config: Any, start_stack: Any, fake: FakeLLM
) -> None:
    s = await stack(make_config, start_stack, fake)
    status, body = await s.client.post(
        "/api/agents/echo/batch", json={"tasks": [{"message": "a"}, {"message": "b"}]}, token=TOKENS["jobs_rw"][0]
    )
    assert status == 200, body
    assert set(body) == BATCH_KEYS
    assert body["agent_name"] == "echo" and body["status"] == "submitted" and body["task_count"] == 2
    assert len(body["job_ids"]) == 2 and len(set(body["job_ids"])) == 2
    assert body["task_ids"] == body["job_ids"] == body["trace_ids"]
    view = await finished(s, body["batch_id"])
    assert view["status"] == "completed" and view["completed_at"] is not None
    assert list(view) == [
        "batch_id",
        "agent_name",
        "status",
        "task_count",
        "job_ids",
        "task_ids",
        "trace_ids",
        "inputs",
        "outputs",
        "created_at",
        "completed_at",
    ]
    assert view["inputs"] == {"tasks": [{"message": "a"}, {"message": "b"}]}
    assert view["outputs"]["summary"] == {"total_expected": 2, "recorded": 2, "succeeded": 2, "failed": 0}
    results = view["outputs"]["results"]
    for index, (job_id, message) in enumerate(zip(body["job_ids"], ["a", "b"], strict=True)):
        entry = results[job_id]
        assert entry["status"] == "success"
        assert entry["response"] == {
            "status": "success",
            "result": f"m-echo: {message}",
            "job_id": job_id,
            "prompt_id": job_id,
        }
        assert entry["metadata"]["agent_name"] == "echo" and entry["metadata"]["batch_index"] == index
        assert entry["metadata"]["recorded_at"].endswith("Z")
        # unlike Laddr, every task is a job of its own: its job view and its traces exist
        status, job = await s.client.get(f"/api/jobs/{job_id}")
        assert status == 200 and job["status"] == "completed", job
        trail = await laddr.traces(s, job_id)
        assert [t["event_type"] for t in trail][-1] == "task_complete"
        # Laddr's task payload keys in task_start (written by the agent runtime from the job's context)
        inputs = trail[0]["payload"]["inputs"]
        assert (inputs["_batch_id"], inputs["_batch_index"], inputs["trace_id"]) == (body["batch_id"], index, job_id)


async def test_row13_tasks_run_on_the_callers_authority(make_config: Any, start_stack: Any, fake: FakeLLM) -> None:
    s = await stack(make_config, start_stack, fake)
    status, body = await s.client.post(
        "/api/agents/echo/batch", json={"tasks": [{"message": "x"}]}, token=TOKENS["jobs_rw"][0]
    )
    assert status == 200
    assert s.api.bus is not None
    submitted = await s.api.bus.last_message(subjects.COMMANDS, subjects.job_command(body["job_ids"][0], "submit"))
    assert submitted is not None
    data = submitted[1].data
    assert data["authority"] == {"principal": "jobs_rw", "scopes": ["jobs:rw"]}
    assert data["plugin"] == "agent" and data["command"] == "echo"
    assert data["context"] == {"batch_id": body["batch_id"], "batch_index": 0, "trace_id": body["job_ids"][0]}
    status, _ = await s.client.post(
        "/api/agents/echo/batch", json={"tasks": [{"message": "x"}]}, token=TOKENS["jobs_ro"][0]
    )
    assert status == 403


async def test_row13_wait_true_returns_every_result_and_get_agrees(
    make_config: Any, start_stack: Any, fake: FakeLLM
) -> None:
    s = await stack(make_config, start_stack, fake)
    status, body = await s.client.post("/api/agents/echo/batch", json={"tasks": [{"message": "c"}], "wait": True})
    assert status == 200, body
    assert set(body) == BATCH_KEYS | {"results"} and body["status"] == "completed"
    (job_id,) = body["job_ids"]
    assert body["results"] == [
        {
            "task_id": job_id,
            "response": {"status": "success", "result": "m-echo: c", "job_id": job_id, "prompt_id": job_id},
        }
    ]
    status, view = await s.client.get(f"/api/batches/{body['batch_id']}")  # read your writes, no waiting
    assert status == 200 and view["status"] == "completed"
    assert view["outputs"]["results"][job_id]["response"]["result"] == "m-echo: c"


async def test_row13_wait_true_waits_for_the_tasks_concurrently(
    make_config: Any, start_stack: Any, fake: FakeLLM
) -> None:
    s = await stack(make_config, start_stack, fake)
    release = asyncio.Event()
    fake.script("m-slow", *[fake_llm.held(release, fake_llm.text(f"slow {i}")) for i in range(3)])
    waited = asyncio.create_task(
        s.client.post("/api/agents/slow/batch", json={"tasks": [{"message": str(i)} for i in range(3)], "wait": True})
    )

    async def all_three_asking() -> bool:  # one after another, the second would wait for the first's answer
        return len(fake.requests_for("m-slow")) == 3

    await infra.wait_until(all_three_asking, timeout_s=20, what="the three tasks to run at once")
    assert not waited.done()
    release.set()
    status, body = await waited
    assert status == 200 and body["status"] == "completed", body
    assert sorted(r["response"]["result"] for r in body["results"]) == ["slow 0", "slow 1", "slow 2"]
    assert [r["task_id"] for r in body["results"]] == body["job_ids"]


async def test_row13_wait_true_timeout_answers_null_for_tasks_still_running(
    make_config: Any, start_stack: Any, fake: FakeLLM
) -> None:
    s = await stack(make_config, start_stack, fake)
    fake.script("m-slow", fake_llm.delayed(3.0, fake_llm.text("late")))
    status, body = await s.client.post(
        "/api/agents/slow/batch", json={"tasks": [{"message": "x"}], "wait": True, "timeout": 0.5}
    )
    assert status == 200, body
    assert body["status"] == "running" and body["results"] == [{"task_id": body["job_ids"][0], "response": None}]
    view = await finished(s, body["batch_id"])
    assert view["status"] == "completed"


async def test_row13_wait_true_beyond_the_sync_slots_is_429_and_creates_nothing(
    make_config: Any, start_stack: Any, fake: FakeLLM
) -> None:
    api = {
        "listen": "127.0.0.1:0",
        "max_concurrent_sync": 1,
        "auth": {"tokens": [{"name": "admin", "token": TOKENS["admin"][0], "scopes": ["*"]}]},
    }
    s: Stack = await start_stack(
        make_config(plugins=laddr.plugins(), api=api, agents={"slow": laddr.agent(fake, "m-slow")})
    )
    release = asyncio.Event()
    fake.script("m-slow", fake_llm.held(release, fake_llm.text("slow")))
    first = asyncio.create_task(s.client.post("/api/agents/slow/batch", json={"tasks": [{"m": "1"}], "wait": True}))

    async def waiting() -> bool:
        return bool(fake.requests_for("m-slow"))

    await infra.wait_until(waiting, timeout_s=15, what="the first batch's task to run")
    status, body = await s.client.post("/api/agents/slow/batch", json={"tasks": [{"m": "2"}], "wait": True})
    assert status == 429, body
    release.set()
    status, body = await first
    assert status == 200 and body["status"] == "completed"
    await laddr.projected(s)
    _, listed = await s.client.get("/api/batches")
    assert [b["batch_id"] for b in listed["batches"]] == [body["batch_id"]]
    assert await s.api.pool.fetchval("SELECT count(*) FROM jobs WHERE plugin = 'agent'") == 1


async def test_row13_bad_batch_requests(make_config: Any, start_stack: Any, fake: FakeLLM) -> None:
    s = await stack(make_config, start_stack, fake)
    cases = [
        ({}, "tasks"),
        ({"tasks": {"a": 1}}, "tasks"),
        ({"tasks": ["text"]}, "tasks"),
        ({"tasks": [], "wait": "soon"}, "wait"),
        ({"tasks": [], "batch_id": "a.b"}, "batch_id"),
        ({"tasks": [], "wait": True, "timeout": -1}, "timeout"),
    ]
    for payload, field in cases:
        status, body = await s.client.post("/api/agents/echo/batch", json=payload)
        assert invalid(status, body, field), (payload, status, body)
    # Laddr publishes to an agent nobody serves; Headrace refuses an unknown agent
    status, body = await s.client.post("/api/agents/ghost/batch", json={"tasks": [{"message": "x"}]})
    assert status == 404 and detail(body) == "Agent not found" and "ghost" in body["error"]
    status, listed = await s.client.get("/api/batches")
    assert listed["batches"] == []  # nothing was created by a refused request


async def test_row13_an_existing_batch_id_extends_the_batch(make_config: Any, start_stack: Any, fake: FakeLLM) -> None:
    s = await stack(make_config, start_stack, fake)
    release = asyncio.Event()  # the first batch stays open until it is extended
    fake.script("m-slow", fake_llm.held(release, fake_llm.text("slowly")))
    _, first = await s.client.post("/api/agents/slow/batch", json={"tasks": [{"message": "one"}]})
    status, second = await s.client.post(
        "/api/agents/echo/batch", json={"tasks": [{"message": "two"}], "batch_id": first["batch_id"]}
    )
    assert status == 200 and second["batch_id"] == first["batch_id"] and second["task_count"] == 1
    release.set()
    view = await finished(s, first["batch_id"])
    assert view["agent_name"] == "slow" and view["task_count"] == 2
    assert view["job_ids"] == first["job_ids"] + second["job_ids"]
    metadata = [view["outputs"]["results"][j]["metadata"] for j in view["job_ids"]]
    assert [(m["agent_name"], m["batch_index"]) for m in metadata] == [("slow", 0), ("echo", 1)]


async def test_row13_idempotency_key_makes_a_retried_post_one_batch(
    make_config: Any, start_stack: Any, fake: FakeLLM
) -> None:
    s = await stack(make_config, start_stack, fake)
    request = {"json": {"tasks": [{"message": "once"}]}, "headers": {"Idempotency-Key": "batch-1"}}
    _, first = await s.client.post("/api/agents/echo/batch", **request)
    _, again = await s.client.post("/api/agents/echo/batch", **request)
    assert again == first
    view = await finished(s, first["batch_id"])
    assert view["task_count"] == 1 and view["job_ids"] == first["job_ids"]
    await laddr.projected(s)
    count = await s.api.pool.fetchval("SELECT count(*) FROM jobs WHERE plugin = 'agent'")
    assert count == 1


async def test_row14_add_tasks_to_a_running_batch(make_config: Any, start_stack: Any, fake: FakeLLM) -> None:
    s = await stack(make_config, start_stack, fake)
    release = asyncio.Event()  # the slow task runs until the echo tasks are checked
    fake.script("m-slow", fake_llm.held(release, fake_llm.text("slow one")))
    _, created = await s.client.post("/api/agents/slow/batch", json={"tasks": [{"message": "slow one"}]})
    batch_id = created["batch_id"]
    status, added = await s.client.post(
        f"/api/batches/{batch_id}/add-tasks", json={"agent_name": "echo", "tasks": [{"message": "d"}]}
    )
    assert status == 200, added
    assert list(added) == [
        "batch_id",
        "status",
        "added_job_ids",
        "added_trace_ids",
        "added_task_ids",
        "total_tasks",
        "total_job_ids",
    ]
    assert added["status"] in ("submitted", "running") and added["total_tasks"] == added["total_job_ids"] == 2
    status, waited = await s.client.post(
        f"/api/batches/{batch_id}/add-tasks", json={"agent_name": "echo", "tasks": [{"message": "d2"}], "wait": True}
    )
    assert status == 200 and waited["total_tasks"] == 3
    assert waited["results"] == [
        {
            "task_id": waited["added_task_ids"][0],
            "response": {
                "status": "success",
                "result": "m-echo: d2",
                "job_id": waited["added_job_ids"][0],
                "prompt_id": waited["added_job_ids"][0],
            },
        }
    ]

    async def echoes_done() -> dict[str, Any] | None:  # the slow task's answer is held
        _, body = await s.client.get(f"/api/batches/{batch_id}")
        return body if body["outputs"]["summary"]["recorded"] == 2 else None

    running = await infra.wait_until(echoes_done, timeout_s=10, what="both echo tasks to finish")
    assert running["status"] == "running" and running["task_count"] == 3
    assert running["outputs"]["summary"] == {"total_expected": 3, "recorded": 2, "succeeded": 2, "failed": 0}
    assert running["inputs"]["tasks"] == [{"message": "slow one"}, {"message": "d"}, {"message": "d2"}]
    release.set()
    view = await finished(s, batch_id)
    assert view["status"] == "completed" and view["agent_name"] == "slow"
    assert [view["outputs"]["results"][j]["metadata"]["agent_name"] for j in view["job_ids"]] == [
        "slow",
        "echo",
        "echo",
    ]


async def test_row14_add_tasks_refusals(make_config: Any, start_stack: Any, fake: FakeLLM) -> None:
    s = await stack(make_config, start_stack, fake)
    _, done = await s.client.post("/api/agents/echo/batch", json={"tasks": [{"message": "c"}], "wait": True})
    status, body = await s.client.post(
        f"/api/batches/{done['batch_id']}/add-tasks", json={"agent_name": "echo", "tasks": [{"message": "e"}]}
    )
    assert status == 400 and detail(body) == "Cannot add tasks to batch with status: completed", body
    status, body = await s.client.post(
        "/api/batches/no-such-batch/add-tasks", json={"agent_name": "echo", "tasks": [{"message": "f"}]}
    )
    assert status == 404 and detail(body) == "Batch not found"
    status, body = await s.client.post(f"/api/batches/{done['batch_id']}/add-tasks", json={"tasks": [{"m": "g"}]})
    assert invalid(status, body, "agent_name"), body
    status, view = await s.client.get(f"/api/batches/{done['batch_id']}")
    assert status == 200 and view["task_count"] == 1  # nothing was added


async def test_row15_get_batch_unknown_and_failed(make_config: Any, start_stack: Any, fake: FakeLLM) -> None:
    s = await stack(make_config, start_stack, fake)
    status, body = await s.client.get("/api/batches/no-such-batch")
    assert status == 404 and detail(body) == "Batch not found"
    fake.script("m-echo", fake_llm.error(400, "context length exceeded"))
    _, created = await s.client.post("/api/agents/echo/batch", json={"tasks": [{"message": "bad"}, {"message": "ok"}]})
    view = await finished(s, created["batch_id"], timeout_s=30)
    assert view["status"] == "failed", view
    assert view["outputs"]["summary"] == {"total_expected": 2, "recorded": 2, "succeeded": 1, "failed": 1}
    statuses = sorted(r["status"] for r in view["outputs"]["results"].values())
    assert statuses == ["error", "success"]
    failed = next(r for r in view["outputs"]["results"].values() if r["status"] == "error")
    assert "context length exceeded" in failed["response"]["error"]


async def test_row16_list_batches_newest_first(make_config: Any, start_stack: Any, fake: FakeLLM) -> None:
    s = await stack(make_config, start_stack, fake)
    ids = []
    for i in range(3):
        _, body = await s.client.post("/api/agents/echo/batch", json={"tasks": [{"message": str(i)}], "wait": True})
        ids.append(body["batch_id"])
    await laddr.projected(s)
    status, listed = await s.client.get("/api/batches?limit=2", token=TOKENS["jobs_ro"][0])
    assert status == 200 and listed["limit"] == 2
    assert [b["batch_id"] for b in listed["batches"]] == [ids[2], ids[1]]
    for entry in listed["batches"]:
        assert set(entry) == ROW_KEYS and entry["status"] == "completed" and entry["task_count"] == 1
    status, rest = await s.client.get("/api/batches?limit=2&offset=2")
    assert [b["batch_id"] for b in rest["batches"]] == [ids[0]]
    status, body = await s.client.get("/api/batches?limit=abc")
    assert invalid(status, body, "limit"), body


async def test_rebuild_reprojects_the_batches(
    make_config: Any, start_stack: Any, fake: FakeLLM, database_url: str
) -> None:
    s = await stack(make_config, start_stack, fake)
    _, first = await s.client.post(
        "/api/agents/echo/batch", json={"tasks": [{"message": "a"}, {"message": "b"}], "wait": True}
    )
    await s.client.post("/api/agents/echo/batch", json={"tasks": [{"message": "c"}], "batch_id": first["batch_id"]})
    await s.client.post("/api/agents/slow/batch", json={"tasks": [{"message": "d"}], "wait": True})
    await finished(s, first["batch_id"])
    await laddr.projected(s)
    live = await readmodels.snapshot(database_url)
    assert len(live["batches"]) == 2 and len(live["batch_members"]) == 4
    _, before = await s.client.get(f"/api/batches/{first['batch_id']}")
    await rebuild.rebuild(s.api.bus, database_url)
    rebuilt = await readmodels.snapshot(database_url)
    assert rebuilt["batches"] == live["batches"] and rebuilt["batch_members"] == live["batch_members"]
    assert rebuilt == live
    _, after = await s.client.get(f"/api/batches/{first['batch_id']}")
    assert after == before

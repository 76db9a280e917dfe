"""Laddr conformance, jobs and prompts (laddr-conformance.md route table rows 3-9 and §8.3 rows 3-11),
over real HTTP against the fake LLM: Laddr's status codes (200, 404, 422) and bodies."""

from __future__ import annotations

from typing import Any

import pytest

from services.core import errors
from tests.conformance.laddr.jobs_support import ANSWER, USAGE, api_section, invalid, ok, run_echo, script_echo, start
from tests.support import fake_llm, laddr
from tests.support.fake_llm import FakeLLM
from tests.support.stack import TOKENS, Stack

SYNC_KEYS = {"job_id", "status", "result", "error", "duration_ms", "agent", "created_at", "pipeline_name"}
JOB_KEYS = {
    "job_id",
    "status",
    "pipeline_name",
    "inputs",
    "outputs",
    "error",
    "created_at",
    "completed_at",
    "token_usage",
}


@pytest.fixture
async def s(make_config: Any, start_stack: Any, fake: FakeLLM) -> Stack:
    return await start(make_config, start_stack, fake)


# --- route table ---------------------------------------------------------------------------------


async def test_route_03_post_jobs_validates_like_laddrs_model(s: Stack) -> None:
    cases = [
        ({"pipeline_name": "echo"}, "inputs"),
        ({"pipeline_name": "echo", "inputs": None}, "inputs"),
        ({"pipeline_name": "echo", "inputs": "text"}, "inputs"),
        ({"pipeline_name": "echo", "inputs": [1]}, "inputs"),
        ({"inputs": {}}, "pipeline_name"),
        ({"pipeline_name": 7, "inputs": {}}, "pipeline_name"),
        ({"pipeline_name": "echo", "inputs": {}, "wait": "maybe"}, "wait"),
    ]
    for payload, field in cases:
        status, body = await s.client.post("/api/jobs", json=payload)
        assert invalid(status, body, field), (payload, status, body)
    status, body = await s.client.post("/api/jobs", json={"pipeline_name": "echo", "inputs": {}, "color": "red"})
    assert ok(status) and body["status"] == "queued", body  # unknown fields are ignored, as in Laddr


async def test_route_04_get_job_has_laddrs_keys(s: Stack, fake: FakeLLM) -> None:
    job_id = await run_echo(s, fake, {"query": "add 2 and 3"})
    status, view = await s.client.get(f"/api/jobs/{job_id}", token=TOKENS["jobs_ro"][0])
    assert status == 200 and JOB_KEYS <= view.keys(), view
    assert view["inputs"] == {"query": "add 2 and 3"} and view["outputs"] == ANSWER and view["error"] is None
    assert view["created_at"] <= view["completed_at"]
    status, _ = await s.client.get("/api/jobs/00000000-0000-4000-8000-000000000000")
    assert status == 404


async def test_route_05_get_jobs_pages_newest_first(s: Stack, fake: FakeLLM) -> None:
    ids = [await run_echo(s, fake) for _ in range(3)]
    status, listed = await s.client.get("/api/jobs")
    assert status == 200 and [j["job_id"] for j in listed] == ids[::-1]
    status, page = await s.client.get("/api/jobs?limit=1&offset=1")
    assert status == 200 and [j["job_id"] for j in page] == [ids[1]]
    status, body = await s.client.get("/api/jobs?limit=abc")
    assert invalid(status, body, "limit")


async def test_route_06_replay_returns_the_stored_result_or_reexecutes(s: Stack, fake: FakeLLM) -> None:
    job_id = await run_echo(s, fake)
    status, stored = await s.client.post(f"/api/jobs/{job_id}/replay", json={})
    assert status == 200 and stored["job_id"] == job_id and stored["result"] == ANSWER
    assert len(fake.requests_for("m-echo")) == 2  # nothing ran again
    script_echo(fake)
    status, again = await s.client.post(f"/api/jobs/{job_id}/replay", json={"reexecute": True})
    assert ok(status) and again["job_id"] != job_id and again["original_job_id"] == job_id
    assert (await s.client.wait_job(again["job_id"]))["status"] == "succeeded"
    assert len(fake.requests_for("m-echo")) == 4


async def test_route_07_post_prompts_single_and_sequential(s: Stack) -> None:
    status, single = await s.client.post("/api/prompts", json={"prompt_name": "plain", "inputs": {"q": "hi"}})
    assert ok(status) and single["status"] == "running" and single["agents"] == ["plain"], single
    assert {"prompt_id", "status", "agent", "mode", "agents"} <= single.keys() and single["agent"] == "plain"
    status, chain = await s.client.post(
        "/api/prompts",
        json={"prompt_name": "story", "mode": "sequential", "agents": ["plain", "plain"], "inputs": {"q": "hi"}},
    )
    assert ok(status) and chain["agents"] == ["plain", "plain"] and chain["mode"] == "sequential"
    # a prompt still waiting on its child agent job would hold the runner's stop until its deadline
    for started in (single, chain):
        await s.client.wait_job(started["prompt_id"], timeout_s=30)
    for payload, field in (
        ({"prompt_name": "plain"}, "inputs"),
        ({"prompt_name": "plain", "inputs": "x"}, "inputs"),
        ({"prompt_name": "plain", "inputs": {}, "agents": "plain"}, "agents"),
    ):
        status, body = await s.client.post("/api/prompts", json=payload)
        assert invalid(status, body, field), (payload, body)


async def test_route_08_get_prompt(s: Stack) -> None:
    status, body = await s.client.post("/api/prompts", json={"prompt_name": "plain", "inputs": {"q": "hi"}})
    await s.client.wait_job(body["prompt_id"])
    await laddr.projected(s)
    status, view = await s.client.get(f"/api/prompts/{body['prompt_id']}")
    assert status == 200
    assert {
        "prompt_id",
        "status",
        "prompt_name",
        "inputs",
        "outputs",
        "error",
        "created_at",
        "completed_at",
        "token_usage",
    } <= view.keys()
    assert view["status"] == "completed" and view["outputs"] == "m-plain: hi" and view["inputs"] == {"q": "hi"}
    assert view["token_usage"]["by_model"][0]["model"] == "m-plain"
    status, _ = await s.client.get("/api/prompts/nope")
    assert status == 404


async def finished_prompts(s: Stack, count: int) -> list[str]:
    """`count` prompts run one after another to the end and projected; their ids, oldest first."""
    ids = []
    for n in range(count):
        _, body = await s.client.post("/api/prompts", json={"prompt_name": "plain", "inputs": {"n": str(n)}})
        ids.append(body["prompt_id"])
        await s.client.wait_job(body["prompt_id"])
    await laddr.projected(s)
    return ids


async def test_route_09_list_prompts_applies_offset(s: Stack) -> None:
    ids = await finished_prompts(s, 3)
    status, listed = await s.client.get("/api/prompts?limit=2&offset=1")
    assert status == 200 and listed["limit"] == 2 and [p["prompt_id"] for p in listed["prompts"]] == [ids[1], ids[0]]
    assert all(p["completed_at"] for p in listed["prompts"])


# --- §8.3 ----------------------------------------------------------------------------------------


async def test_s83_03_post_jobs_queued_or_waited(s: Stack, fake: FakeLLM) -> None:
    status, queued = await s.client.post("/api/jobs", json={"pipeline_name": "plain", "inputs": {"q": "a"}})
    assert ok(status) and queued["status"] == "queued" and {"job_id", "created_at"} <= queued.keys()
    for path, extra in (("/api/jobs?wait=true", {}), ("/api/jobs", {"wait": True})):
        script_echo(fake)
        status, done = await s.client.post(path, json={"pipeline_name": "echo", "inputs": {"q": "2+3"}, **extra})
        assert status == 200 and SYNC_KEYS <= done.keys(), (path, done)
        assert done["status"] == "completed" and done["result"] == ANSWER and done["error"] is None
        assert done["agent"] == "echo" and isinstance(done["duration_ms"], int) and done["duration_ms"] > 0
    fake.script("m-plain", fake_llm.error(401, "bad key"))
    status, failed = await s.client.post("/api/jobs?wait=true", json={"pipeline_name": "plain", "inputs": {}})
    assert status == 200 and failed["status"] == "failed" and "bad key" in failed["error"]
    assert failed["result"] == {"error": failed["error"]}
    fake.script("m-slow", fake_llm.delayed(2.0, fake_llm.text("late")))
    status, late = await s.client.post(
        "/api/jobs", json={"pipeline_name": "slow", "inputs": {}, "wait": True, "timeout": "0.3"}
    )
    assert ok(status) and late["status"] in ("queued", "running") and late["result"] is None and late["timeout"]


async def test_s83_04_jobs_list_is_an_array_or_laddrs_object(make_config: Any, start_stack: Any, fake: FakeLLM) -> None:
    s = await start(make_config, start_stack, fake, api=api_section(jobs_list="object"))
    ids = [await run_echo(s, fake) for _ in range(2)]
    status, body = await s.client.get("/api/jobs?limit=1&offset=1")
    assert status == 200 and body["limit"] == 1 and body["offset"] == 1
    assert [j["job_id"] for j in body["jobs"]] == [ids[0]]
    item = body["jobs"][0]
    assert {"job_id", "status", "pipeline_name", "created_at", "completed_at"} == item.keys()
    assert item["completed_at"] is not None and item["status"] == "completed"
    status, body = await s.client.get("/api/jobs?offset=-1")  # Laddr takes it; nothing is skipped
    assert status == 200 and body["offset"] == 0 and len(body["jobs"]) == 2
    status, array = await s.client.get("/api/jobs?format=array")
    assert status == 200 and [j["job_id"] for j in array] == ids[::-1]


async def test_s83_05_status_words_are_completed_and_failed(s: Stack, fake: FakeLLM) -> None:
    good = await run_echo(s, fake)
    fake.script("m-plain", fake_llm.error(401, "bad key"))
    _, body = await s.client.post("/api/jobs", json={"pipeline_name": "plain", "inputs": {}})
    await s.client.wait_job(body["job_id"])
    await laddr.projected(s)
    _, listed = await s.client.get("/api/jobs")
    assert {j["job_id"]: j["status"] for j in listed} == {good: "completed", body["job_id"]: "failed"}
    _, view = await s.client.get(f"/api/jobs/{body['job_id']}")
    assert view["status"] == "failed"


async def test_s83_06_token_usage_by_model_list_and_error_text(s: Stack, fake: FakeLLM) -> None:
    job_id = await run_echo(s, fake)
    _, view = await s.client.get(f"/api/jobs/{job_id}")
    assert view["token_usage"] == {
        **USAGE,
        "by_model": [{"provider": "openai", "model": "m-echo", **USAGE, "calls": 2}],
    }
    fake.script("m-plain", fake_llm.error(400, "context length exceeded"))
    _, body = await s.client.post("/api/jobs", json={"pipeline_name": "plain", "inputs": {}})
    await s.client.wait_job(body["job_id"])
    _, failed = await s.client.get(f"/api/jobs/{body['job_id']}")
    assert "context length exceeded" in failed["error"] and failed["outputs"] == {"error": failed["error"]}


async def test_s83_07_replay_takes_every_request_form(s: Stack, fake: FakeLLM) -> None:
    job_id = await run_echo(s, fake)
    for form in ({"data": None}, {"json": {}}, {"json": {"reexecute": False}}, {"json": {"request": False}}):
        status, body = await s.client.post(f"/api/jobs/{job_id}/replay", **form)
        assert status == 200 and body["job_id"] == job_id and body["result"] == ANSWER, (form, body)
    for form in ({"request": True}, {"job_id": job_id, "request": True}, {"reexecute": True}):
        script_echo(fake)
        status, body = await s.client.post(f"/api/jobs/{job_id}/replay", json=form)
        assert ok(status) and body["job_id"] != job_id and body["replayed"] is True, (form, body)
        assert (await s.client.wait_job(body["job_id"]))["status"] == "succeeded"
    status, body = await s.client.post(f"/api/jobs/{job_id}/replay", json={"reexecute": "maybe"})
    assert invalid(status, body, "reexecute")


async def test_s83_08_replay_answers_the_superset(s: Stack, fake: FakeLLM) -> None:
    job_id = await run_echo(s, fake)
    _, view = await s.client.get(f"/api/jobs/{job_id}")
    status, stored = await s.client.post(f"/api/jobs/{job_id}/replay", json={})
    assert status == 200
    assert {
        k: stored[k]
        for k in (
            "job_id",
            "status",
            "result",
            "error",
            "pipeline_name",
            "created_at",
            "completed_at",
            "replayed",
            "original_job_id",
        )
    } == {
        "job_id": job_id,
        "status": "completed",
        "result": ANSWER,
        "error": None,
        "pipeline_name": "echo",
        "created_at": view["created_at"],
        "completed_at": view["completed_at"],
        "replayed": True,
        "original_job_id": job_id,
    }
    script_echo(fake)
    status, again = await s.client.post(f"/api/jobs/{job_id}/replay", json={"reexecute": True})
    assert ok(status) and again["replayed"] is True and again["original_job_id"] == job_id
    assert again["pipeline_name"] == "echo" and again["created_at"]
    await s.client.wait_job(again["job_id"])
    _, replayed = await s.client.get(f"/api/jobs/{again['job_id']}")
    assert replayed["original_job_id"] == job_id and replayed["outputs"] == ANSWER  # linked in the event log
    status, missing = await s.client.post("/api/jobs/00000000-0000-4000-8000-000000000000/replay", json={})
    assert status == 200 and missing["status"] == "error"
    assert missing["error"] == "Job not found: 00000000-0000-4000-8000-000000000000" and missing["detail"]


async def test_s83_09_post_prompts_keys(s: Stack) -> None:
    status, body = await s.client.post(
        "/api/prompts", json={"prompt_name": "plain", "mode": "sequential", "inputs": {"q": "x"}}
    )
    assert ok(status) and body["agents"] == ["plain"] and body["agent"] == "plain" and body["mode"] == "sequential"
    first = body["prompt_id"]
    status, body = await s.client.post("/api/prompts", json={"prompt_name": "plain", "inputs": {}, "extra": 1})
    assert ok(status) and body["mode"] == "single"
    for prompt_id in (first, body["prompt_id"]):  # none left waiting on a child when the stack stops
        await s.client.wait_job(prompt_id, timeout_s=30)


async def test_s83_10_prompts_list_offset_and_completed_at(s: Stack) -> None:
    ids = await finished_prompts(s, 2)
    _, listed = await s.client.get("/api/prompts?offset=1")
    assert [p["prompt_id"] for p in listed["prompts"]] == [ids[0]] and listed["prompts"][0]["completed_at"]
    _, everything = await s.client.get("/api/prompts?offset=-5")
    assert [p["prompt_id"] for p in everything["prompts"]] == ids[::-1]


async def test_s83_11_prompt_outputs_is_the_raw_answer(s: Stack, fake: FakeLLM) -> None:
    _, body = await s.client.post(
        "/api/prompts",
        json={"prompt_name": "story", "mode": "sequential", "agents": ["plain", "echo"], "inputs": {"q": "hi"}},
    )
    script_echo(fake)
    await s.client.wait_job(body["prompt_id"], timeout_s=30)
    await laddr.projected(s)
    _, view = await s.client.get(f"/api/prompts/{body['prompt_id']}")
    assert view["outputs"] == ANSWER and view["error"] is None
    assert [m["model"] for m in view["token_usage"]["by_model"]] == ["m-plain", "m-echo"]
    assert view["token_usage"]["total_tokens"] == 10 + USAGE["total_tokens"]
    _, twin = await s.client.get(f"/api/jobs/{body['prompt_id']}")  # the prompt's job row, as in Laddr
    assert twin["inputs"] == {"q": "hi"} and twin["outputs"] == ANSWER and twin["status"] == "completed"


async def test_s83_03_a_waited_job_naming_a_pipeline(make_config: Any, start_stack: Any, fake: FakeLLM) -> None:
    pipes = [{"name": "greet", "steps": [{"id": "hello", "uses": "echo_py"}]}]
    s = await start(make_config, start_stack, fake, pipelines=pipes)
    status, done = await s.client.post(
        "/api/jobs?wait=true", json={"pipeline_name": "greet", "inputs": {"message": "x"}}
    )
    assert status == 200 and SYNC_KEYS <= done.keys(), done
    assert done["status"] == "completed" and done["agent"] is None and done["pipeline_name"] == "greet"


def test_s83_04_jobs_list_option_is_checked(make_config: Any) -> None:
    assert make_config(api=api_section(jobs_list="object")).api.laddr.jobs_list == "object"
    assert make_config().api.laddr.jobs_list == "array"
    with pytest.raises(errors.ConfigError, match=r"api\.laddr\.jobs_list: must be one of 'array', 'object'"):
        make_config(api=api_section(jobs_list="dict"))
    with pytest.raises(errors.ConfigError, match=r"api\.laddr: unknown key 'jobs_lsit'"):
        make_config(api=api_section(jobs_lsit="object"))

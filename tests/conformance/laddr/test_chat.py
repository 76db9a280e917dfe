"""Laddr conformance, chat and resolved responses (laddr-conformance.md route table rows 12 and 18,
§8.3 rows 13 and 14), over real HTTP against the fake LLM: the JSON body on a GET or the query
string, wait/timeout defaults and coercion, the completed/submitted/timeout shapes."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.conformance.laddr.jobs_support import ANSWER, invalid, ok, script_echo, start
from tests.support import fake_llm
from tests.support.fake_llm import FakeLLM
from tests.support.stack import TOKENS, Stack

CHAT = "/api/agents/echo/chat"


@pytest.fixture
async def s(make_config: Any, start_stack: Any, fake: FakeLLM) -> Stack:
    return await start(make_config, start_stack, fake)


async def test_route_12_chat_with_a_json_body_on_get(s: Stack, fake: FakeLLM) -> None:
    script_echo(fake)
    status, body = await s.client.get(CHAT, json={"message": "add 2 and 3"}, token=TOKENS["jobs_ro"][0])
    assert status == 200 and body["status"] == "completed" and body["task_id"], body
    assert fake.requests_for("m-echo")[0]["messages"][-1] == {"role": "user", "content": "add 2 and 3"}
    status, body = await s.client.post(CHAT, json={"message": "hello"})
    assert status == 405  # Laddr serves GET only
    status, body = await s.client.get("/api/agents/ghost/chat", json={"message": "anyone?", "timeout": 1})
    assert status == 404  # we know our agents; Laddr would queue it and time out


async def test_route_18_resolved_response_of_a_chat(s: Stack, fake: FakeLLM) -> None:
    script_echo(fake)
    status, submitted = await s.client.get(CHAT, json={"message": "later", "wait": False})
    assert ok(status) and submitted["status"] == "submitted"
    task_id = submitted["task_id"]
    await s.client.wait_job(task_id)
    status, body = await s.client.get(f"/api/responses/{task_id}/resolved")
    assert status == 200 and body["task_id"] == task_id and body["offloaded"] is False and body["pointer"] is None
    assert {k: body["data"][k] for k in ("status", "result", "job_id", "prompt_id")} == {
        "status": "success",
        "result": ANSWER,
        "job_id": task_id,
        "prompt_id": task_id,
    }
    assert body["data"]["iterations"] == 2  # our run details ride along
    status, _ = await s.client.get("/api/responses/no-such-task/resolved")
    assert status == 404


async def test_s83_13_chat_reads_the_body_or_the_query_string(s: Stack, fake: FakeLLM) -> None:
    status, body = await s.client.get("/api/agents/plain/chat?message=from%20query")
    assert status == 200 and body["result"] == "m-plain: from query"
    status, body = await s.client.get("/api/agents/plain/chat?message=from-query", json={"message": "from-body"})
    assert status == 200 and body["result"] == "m-plain: from-body"  # the body wins
    status, body = await s.client.get("/api/agents/plain/chat?message=q", json={"wait": True})
    assert status == 200 and body["result"] == "m-plain: q"  # a body without message: the query string
    status, body = await s.client.get("/api/agents/plain/chat?message=later&wait=false")
    assert ok(status) and body["status"] == "submitted"
    status, body = await s.client.get(
        "/api/agents/plain/chat", json={"message": "coerced", "wait": "true", "timeout": "30"}
    )
    assert status == 200 and body["status"] == "completed"  # Laddr's lax coercion
    for kwargs, name in [
        ({}, "message"),
        ({"json": {"wait": True}}, "message"),
        ({"json": {"message": 123}}, "message"),
        ({"json": {"message": "x", "timeout": "abc"}}, "timeout"),
        ({"json": {"message": "x", "wait": "maybe"}}, "wait"),
    ]:
        status, body = await s.client.get("/api/agents/plain/chat", **kwargs)
        assert invalid(status, body, name), (kwargs, status, body)
    status, body = await s.client.get(
        "/api/agents/plain/chat", data="{not json", headers={"Content-Type": "application/json"}
    )
    assert status == 422 and "JSON" in str(body)


async def test_s83_14_chat_answers_completed_submitted_and_timeout(s: Stack, fake: FakeLLM) -> None:
    script_echo(fake)
    status, done = await s.client.get(CHAT, json={"message": "add 2 and 3"})
    assert status == 200 and done["status"] == "completed" and done["agent"] == "echo"
    assert done["result"] == ANSWER == done["response"]["result"]
    assert done["response"] == {
        "status": "success",
        "result": ANSWER,
        "job_id": done["task_id"],
        "prompt_id": done["task_id"],
    }
    status, later = await s.client.get(CHAT, json={"message": "later", "wait": False})
    assert ok(status) and later["status"] == "submitted" and later["task_id"]

    fake.script("m-slow", fake_llm.delayed(2.0, fake_llm.text("late")))
    started = time.monotonic()
    status, body = await s.client.get("/api/agents/slow/chat", json={"message": "hurry", "timeout": 1})
    assert ok(status) and body["status"] == "timeout" and body["message"] == "Agent did not respond in time"
    assert time.monotonic() - started > 0.9  # it waited (the answer comes after 2 s)
    await s.client.wait_job(body["task_id"])  # the run goes on
    fake.script("m-slow", fake_llm.delayed(1.0, fake_llm.text("later")))
    started = time.monotonic()
    status, body = await s.client.get("/api/agents/slow/chat", json={"message": "now", "timeout": 0})
    assert ok(status) and body["status"] == "timeout" and time.monotonic() - started < 0.9
    await s.client.wait_job(body["task_id"])

    fake.script("m-plain", fake_llm.error(401, "bad key"))
    status, failed = await s.client.get("/api/agents/plain/chat", json={"message": "x"})
    assert status == 200 and failed["status"] == "completed"  # a reply arrived: Laddr's meaning
    assert failed["response"]["status"] == "error" and "bad key" in failed["response"]["error"]
    assert failed["result"] is None and failed["error"] == failed["response"]["error"]

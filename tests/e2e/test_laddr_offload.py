"""Offload of large results to the JetStream Object Store: plugin and agent results over the
threshold travel as pointers, /api/responses/{id}/resolved fetches them back (404 for an unknown
task, 502 when the object is gone), agents read offloaded tool results, and no event gets big."""

from __future__ import annotations

from typing import Any

from services.core import envelope, subjects
from tests.support import fake_llm, laddr
from tests.support.fake_llm import FakeLLM
from tests.support.stack import TOKENS, Stack


async def test_threshold_zero_offloads_every_result_and_resolves_it(
    make_config: Any, start_stack: Any, fake: FakeLLM
) -> None:
    s: Stack = await start_stack(
        make_config(
            plugins=laddr.plugins(),
            offload={"threshold_bytes": 0, "bucket": "laddr-test"},
            agents={"reader": laddr.agent(fake, "m-reader", tools=["echo_py.poll"])},
        )
    )
    job_id = await s.client.submit("echo_py", "poll", {"message": "small"})
    done = await s.client.wait_job(job_id)
    pointer = done["result"]["pointer"]
    assert done["result"]["offloaded"] is True
    assert pointer["bucket"] == "laddr-test" and pointer["key"] == f"responses/{job_id}" and pointer["size_bytes"] > 0

    status, body = await s.client.get(f"/api/responses/{job_id}/resolved", token=TOKENS["jobs_ro"][0])
    assert status == 200, body
    assert body == {
        "task_id": job_id,
        "status": "completed",
        "offloaded": True,
        "pointer": pointer,
        "data": "Echoed: small",
    }
    status, view = await s.client.get(f"/api/jobs/{job_id}")
    assert view["outputs"] == "Echoed: small"

    # an agent reads its offloaded tool result and its own offloaded answer is resolved for chat
    fake.script("m-reader", fake_llm.tool_calls(("echo_py__poll", {"message": "tool data"})), fake_llm.text("read it"))
    status, chat = await s.client.get("/api/agents/reader/chat?message=go")
    assert status == 200 and chat["result"] == "read it", chat
    tool_messages = [m for m in fake.requests_for("m-reader")[1]["messages"] if m["role"] == "tool"]
    assert tool_messages[0]["content"] == "Echoed: tool data"
    status, body = await s.client.get(f"/api/responses/{chat['task_id']}/resolved")
    assert body["offloaded"] is True and body["data"]["result"] == "read it"

    status, body = await s.client.get("/api/responses/no-such-task/resolved")
    assert status == 404 and "no-such-task" in body["error"]

    assert s.api.bus is not None
    store = await s.api.bus.js.object_store("laddr-test")
    await store.delete(pointer["key"])
    status, body = await s.client.get(f"/api/responses/{job_id}/resolved")
    assert status == 502 and body["code"] == "bad_gateway"
    assert "missing from the object store" in body["error"] and body["pointer"] == pointer
    status, _ = await s.client.get(f"/api/jobs/{job_id}")
    assert status == 502


async def test_default_threshold_offloads_only_large_results(make_config: Any, start_stack: Any) -> None:
    s: Stack = await start_stack(make_config(plugins=laddr.plugins()))
    assert s.config.offload_threshold_bytes == 100 * 1024 and s.config.offload_bucket == "laddr"
    big = "x" * 300_000
    small_id = await s.client.submit("echo_py", "poll", {"message": "tiny"})
    big_id = await s.client.submit("echo_py", "poll", {"message": big})
    small, large = await s.client.wait_job(small_id), await s.client.wait_job(big_id)
    assert small["result"]["result"] == "Echoed: tiny"
    assert large["result"]["offloaded"] is True and large["result"]["pointer"]["size_bytes"] > 300_000
    status, body = await s.client.get(f"/api/responses/{small_id}/resolved")
    assert body["offloaded"] is False and body["pointer"] is None and body["data"] == "Echoed: tiny"
    status, body = await s.client.get(f"/api/responses/{big_id}/resolved")
    assert status == 200 and body["offloaded"] is True and body["data"] == "Echoed: " + big
    assert s.api.bus is not None
    succeeded = await s.api.bus.last_message(subjects.EVENTS, subjects.job_event(big_id, "succeeded"))
    assert succeeded is not None and len(envelope.encode(succeeded[1])) < 2048

"""Read your writes against a projector that is behind: a job's row can hold an older state than its
events (the row of a failed attempt the dispatcher has retried since, the row of a running job that
has ended). What the API answers about such a job follows the event log: GET /job/{id}, a chat's
answer, and the checks of POST /job/{id}/cancel, POST /job/{id}/retry and POST /api/prompts/{id}/cancel.

The projector is stopped, and the job's events up to a chosen one are projected with the
projector's own `apply_batch`: exactly the row a lagging projector would show at that moment.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg

from services.core import db, subjects
from services.projector import projection
from tests.support import fake_llm, laddr
from tests.support.fake_llm import FakeLLM
from tests.support.infra import wait_until
from tests.support.stack import TOKENS, Stack


async def in_log(s: Stack, job_id: str, event_type: str) -> None:
    """Until the job's `event_type` event is in the event log."""
    assert s.api.bus is not None
    bus = s.api.bus

    async def stored() -> bool:
        return any(env.type == event_type for _, env in await bus.history(subjects.EVENTS, subjects.job_events(job_id)))

    await wait_until(stored, timeout_s=20, what=f"{event_type} of {job_id} in the log")


async def project_through(s: Stack, database_url: str, job_id: str, event_type: str) -> str:
    """Project the job's events up to and including its first `event_type` one; the row's status then."""
    assert s.api.bus is not None
    prefix = []
    for seq, env in await s.api.bus.history(subjects.EVENTS, subjects.job_events(job_id)):
        prefix.append((seq, env))
        if env.type == event_type:
            break
    assert prefix[-1][1].type == event_type, [env.type for _, env in prefix]
    conn = await asyncpg.connect(database_url, server_settings={"search_path": db.SCHEMA})
    try:
        await db._init_connection(conn)
        await projection.apply_batch(conn, prefix)
        return str(await conn.fetchval("SELECT status FROM jobs WHERE job_id = $1", job_id))
    finally:
        await conn.close()


async def lagging(make_config: Any, start_stack: Any, **sections: Any) -> Stack:
    """A stack whose projector is stopped: the read models stay where the test puts them."""
    s: Stack = await start_stack(make_config(**sections))
    await s.projector.stop()
    return s


async def test_get_job_reads_the_retry_while_the_row_is_the_failed_attempt(
    make_config: Any, start_stack: Any, database_url: str, tmp_path: Path
) -> None:
    s = await lagging(
        make_config, start_stack, plugins={"echo": {}, "flaky": {"retry": {"max_attempts": 2, "backoff_base": "0.1s"}}}
    )
    assert s.client is not None
    job_id = await s.client.submit("flaky", "poll", {"counter_file": str(tmp_path / "n"), "succeed_on": 2})
    await in_log(s, job_id, "job.succeeded")
    # attempt 1's failure is the row; the dispatcher's retry and attempt 2's success are only in the log
    assert await project_through(s, database_url, job_id, "job.failed") == "failed"
    status, job = await s.client.get(f"/job/{job_id}")
    assert status == 200 and job["status"] == "succeeded" and job["attempt"] == 2, job
    assert job["result"]["result"] == {"calls": 2}


async def test_cancel_of_an_ended_job_is_409_while_its_row_says_running(
    make_config: Any, start_stack: Any, database_url: str
) -> None:
    s = await lagging(make_config, start_stack)
    assert s.client is not None and s.api.bus is not None
    job_id = await s.client.submit("echo_py", "poll", {"message": "done already"})
    await in_log(s, job_id, "job.succeeded")
    assert await project_through(s, database_url, job_id, "job.started") == "running"
    assert (await s.client.get(f"/job/{job_id}"))[1]["status"] == "succeeded"  # what GET says, the cancel says too
    status, body = await s.client.post(f"/job/{job_id}/cancel")
    assert status == 409 and body["status"] == "succeeded", body
    assert await s.api.bus.last_message(subjects.COMMANDS, subjects.job_command(job_id, "cancel")) is None


async def test_retry_of_a_dead_job_is_accepted_while_its_row_says_running(
    make_config: Any, start_stack: Any, database_url: str, tmp_path: Path
) -> None:
    s = await lagging(make_config, start_stack, plugins={"echo": {}, "flaky": {"retry": {"max_attempts": 1}}})
    assert s.client is not None
    job_id = await s.client.submit("flaky", "poll", {"counter_file": str(tmp_path / "n"), "succeed_on": 2})
    await in_log(s, job_id, "job.dead")
    assert await project_through(s, database_url, job_id, "job.started") == "running"
    status, body = await s.client.post(f"/job/{job_id}/retry", token=TOKENS["laddr_rw"][0])
    assert status == 202 and body["retry_of"] == job_id, body
    again = await s.client.wait_job(body["job_id"])
    assert again["status"] == "succeeded" and again["submitted_by"] == "retry"


async def test_laddr_cancel_of_an_ended_job_records_nothing_while_its_row_says_running(
    make_config: Any, start_stack: Any, database_url: str
) -> None:
    s = await lagging(make_config, start_stack)
    assert s.client is not None and s.api.bus is not None
    job_id = await s.client.submit("echo_py", "poll", {"message": "done already"})
    await in_log(s, job_id, "job.succeeded")
    assert await project_through(s, database_url, job_id, "job.started") == "running"
    status, answer = await s.client.post(f"/api/prompts/{job_id}/cancel")
    assert status == 200 and answer == {"ok": True, "prompt_id": job_id, "status": "canceled"}
    # a job that has ended is left alone: no cancel asked of the dispatcher, no task_cancel_requested trace
    assert await s.api.bus.last_message(subjects.COMMANDS, subjects.job_command(job_id, "cancel")) is None
    trace = subjects.trace_event(job_id, "task_cancel_requested")
    assert await s.api.bus.last_message(subjects.EVENTS, trace) is None


async def test_a_chat_answers_the_retry_while_the_row_is_the_failed_attempt(
    make_config: Any, start_stack: Any, database_url: str, fake: FakeLLM
) -> None:
    s = await lagging(make_config, start_stack, plugins=laddr.plugins(), agents={"shaky": laddr.agent(fake, "m-shaky")})
    assert s.client is not None and s.api.bus is not None
    bus = s.api.bus
    # attempt 1 fails at once; attempt 2 answers after 2 s, long after attempt 1's row is written below
    fake.script("m-shaky", fake_llm.error(503, "busy"), fake_llm.delayed(2.0, fake_llm.text("second time lucky")))
    chat = asyncio.create_task(s.client.get("/api/agents/shaky/chat?message=again&timeout=30"))

    async def submitted() -> str | None:
        found = await bus.history(subjects.COMMANDS, "cmd.job.*.submit")
        return found[0][1].job_id if found else None

    job_id = await wait_until(submitted, what="the chat's job")
    await in_log(s, job_id, "job.failed")
    assert await project_through(s, database_url, job_id, "job.failed") == "failed"
    status, body = await chat
    assert status == 200 and body["status"] == "completed", body
    assert body["response"]["status"] == "success" and body["result"] == "second time lucky", body

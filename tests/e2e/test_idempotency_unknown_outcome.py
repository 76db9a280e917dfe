"""An Idempotency-Key request whose submit had an unknown outcome (stored, but its ack lost when the
bus went away) must not become a second job when the client retries: the claim keeps its job id.

Found by the chaos run (tests/chaos): the API deleted the claim on any error, so the retry after a
nats-server kill got a fresh job id while the first submit had been stored — a job no 202 named.
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from services.api import auth, idempotency, state, submit
from services.core import errors, subjects
from tests.support.stack import Client, Stack


async def test_a_retry_after_an_unknown_outcome_is_the_same_job(hr: Stack) -> None:
    assert hr.api.app is not None and hr.api.bus is not None
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        principal = auth.require(request, "plugin:rw")
        st = state.of(request)

        async def create(job_id: str) -> tuple[int, dict[str, Any]]:
            seen.append(job_id)
            await submit.submit_job(st, plugin="echo_py", command="poll", payload={"n": 1}, job_id=job_id)
            if len(seen) == 1:  # the submit is stored, but its answer never reaches the client
                raise errors.TransientError("the event bus went away before the ack")
            return 202, {"job_id": job_id, "status": "queued"}

        try:
            return await idempotency.respond(request, principal, create)
        except errors.TransientError as exc:
            return web.json_response({"error": exc.message}, status=503)

    app = web.Application()
    app[state.STATE] = hr.api.app[state.STATE]
    app[auth.TABLE] = hr.api.app[auth.TABLE]
    app.router.add_post("/submit", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    client = Client(str(server.make_url("")).rstrip("/"))
    try:
        key = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
        first = await client.post("/submit", json={"payload": {"n": 1}}, headers=key)
        assert first[0] == 503, first
        second = await client.post("/submit", json={"payload": {"n": 1}}, headers=key)  # at once, no 409 wait
        assert second[0] == 202, second
        assert seen[0] == seen[1] == second[1]["job_id"], seen
        third = await client.post("/submit", json={"payload": {"n": 1}}, headers=key)
        assert third[0] == 202 and third[1] == second[1]
    finally:
        await client.close()
        await server.close()
    job = await hr.client.wait_job(seen[0]) if hr.client else None
    assert job is not None and job["status"] == "succeeded"
    history = await hr.api.bus.history(subjects.COMMANDS, "cmd.job.*.submit")
    assert [env.job_id for _, env in history].count(seen[0]) == 1
    assert len(history) == 1, [env.job_id for _, env in history]

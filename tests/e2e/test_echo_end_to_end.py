"""One job end to end over HTTP: API → command → dispatcher → work → runner → events → projector → API."""

from __future__ import annotations

from tests.support.stack import Client, Stack


async def test_echo_poll_succeeds_with_the_plugin_result(client: Client) -> None:
    status, body = await client.post("/plugin/echo/poll", json={"payload": {"message": "hi"}})
    assert status == 202
    assert body["status"] == "queued" and body["plugin"] == "echo" and body["command"] == "poll"
    job_id = body["job_id"]

    # read your writes: the GET straight after the 202 never 404s
    status, first = await client.get(f"/job/{job_id}")
    assert status == 200
    assert first["job_id"] == job_id and first["status"] in {"queued", "running", "succeeded"}

    done = await client.wait_job(job_id)
    assert done["status"] == "succeeded"
    assert done["plugin"] == "echo" and done["command"] == "poll" and done["submitted_by"] == "api"
    assert done["result"]["status"] == "ok"
    assert done["result"]["result"] == "Echoed: hi"
    assert done["result"]["logs"] == [{"level": "info", "message": "Echoed: hi"}]
    assert done["created_at"] <= done["started_at"] <= done["completed_at"]


async def test_in_process_python_plugin_end_to_end(client: Client) -> None:
    job_id = await client.submit("echo_py", "poll", {"message": "fast"})
    done = await client.wait_job(job_id)
    assert done["status"] == "succeeded"
    assert done["result"]["result"] == "Echoed: fast"


async def test_handle_wraps_payload_in_api_trigger_event(client: Client) -> None:
    job_id = await client.submit("echo", "handle", {"k": 1})
    done = await client.wait_job(job_id)
    assert done["status"] == "succeeded"
    assert done["result"]["result"] == {"echo": {"k": 1}}
    assert done["result"]["logs"][0]["message"] == "Handled api.trigger"


async def test_the_projected_row_survives_the_event_log_fallback(hr: Stack, client: Client) -> None:
    job_id = await client.submit("echo", "poll", {"message": "x"})
    await client.wait_job(job_id)
    await hr.projector.wait_for(await hr.api.bus.stream_last_seq("EVENTS"))  # type: ignore[union-attr]
    async with hr.api.pool.acquire() as conn:  # type: ignore[union-attr]
        row = await conn.fetchrow("SELECT status, attempt FROM jobs WHERE job_id = $1", job_id)
    assert row is not None and row["status"] == "succeeded" and row["attempt"] == 1

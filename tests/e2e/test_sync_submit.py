"""`POST /plugin/{p}/{c}?wait=`: the answer waits for the job's final event (the dispatcher still decides:
a failed attempt is retried before the answer), 202 with `timeout_exceeded` when the wait runs out first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.stack import Stack


def plugins(**extra: Any) -> dict[str, Any]:
    return {"echo": {}, "echo_py": {}, **extra}


async def test_wait_answers_200_with_the_final_outcome(make_config: Any, start_stack: Any) -> None:
    s: Stack = await start_stack(make_config(plugins=plugins()))
    status, body = await s.client.post("/plugin/echo_py/poll?wait=10s", json={"payload": {"message": "hi"}})
    assert status == 200, body
    assert body["status"] == "succeeded" and body["result"]["result"] == "Echoed: hi"
    assert body["plugin"] == "echo_py" and body["command"] == "poll" and body["attempt"] == 1
    # read your writes: straight after the answer the job reads as final, with the same result
    status, job = await s.client.get(f"/job/{body['job_id']}")
    assert status == 200 and job["status"] == "succeeded" and job["result"] == body["result"], job
    status, body = await s.client.post("/plugin/echo_py/poll?wait=true", json={"payload": {"message": "t"}})
    assert status == 200 and body["status"] == "succeeded", body
    status, job = await s.client.get(f"/job/{body['job_id']}")
    assert status == 200 and job["status"] == "succeeded", job


async def test_wait_covers_the_dispatchers_retries(make_config: Any, start_stack: Any, tmp_path: Path) -> None:
    retry = {"max_attempts": 3, "backoff_base": "0.1s"}
    s: Stack = await start_stack(make_config(plugins=plugins(flaky={"retry": retry})))
    status, body = await s.client.post(
        "/plugin/flaky/poll?wait=20", json={"payload": {"counter_file": str(tmp_path / "n"), "succeed_on": 2}}
    )
    assert status == 200, body
    assert body["status"] == "succeeded" and body["attempt"] == 2
    status, body = await s.client.post(
        "/plugin/flaky/poll?wait=20", json={"payload": {"counter_file": str(tmp_path / "m")}}
    )
    assert status == 200 and body["status"] == "dead" and "flaky failure on call 3" in body["error"], body


async def test_wait_that_runs_out_answers_202(make_config: Any, start_stack: Any) -> None:
    s: Stack = await start_stack(make_config(plugins=plugins(napper={})))
    status, body = await s.client.post("/plugin/napper/poll?wait=200ms", json={"payload": {"seconds": 2}})
    assert status == 202 and body["timeout_exceeded"] is True and body["status"] == "queued", body
    done = await s.client.wait_job(body["job_id"])
    assert done["status"] == "succeeded"


async def test_bad_wait_is_400(make_config: Any, start_stack: Any) -> None:
    s: Stack = await start_stack(make_config(plugins=plugins()))
    for wait in ("soon", "10m"):
        status, body = await s.client.post(f"/plugin/echo_py/poll?wait={wait}", json={"payload": {}})
        assert status == 400 and "wait" in body["error"], (wait, body)

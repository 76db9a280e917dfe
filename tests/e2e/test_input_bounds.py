"""No input can cut the API off NATS: over-long or control-character ids, names, query
filters and headers are JSON 400s naming the parameter, and the service keeps working."""

from __future__ import annotations

import pytest

from tests.support.stack import TOKENS, Client, Stack

LONG = "x" * 4100


def _refused(path: str) -> int:
    """400, or on Laddr's paths FastAPI's 422 for a parameter it refuses (services/api/laddr_dialect.py)."""
    return 422 if path.startswith("/api/") else 400


@pytest.mark.parametrize(
    ("method", "path", "token"),
    [
        ("GET", f"/job/{LONG}", "jobs_ro"),
        ("POST", f"/job/{LONG}/cancel", "jobs_rw"),
        ("POST", f"/job/{LONG}/retry", "jobs_rw"),
        ("GET", f"/job/{LONG}/tree", "jobs_ro"),
        ("GET", f"/api/responses/{LONG}/resolved", "admin"),
        ("GET", f"/api/prompts/{LONG}", "admin"),
        ("POST", f"/plugin/{LONG}/handle", "plugin_rw"),
        ("POST", f"/plugin/echo/{LONG}", "plugin_rw"),
        ("GET", f"/events?job_id={LONG}", "events_ro"),
        ("GET", f"/jobs?plugin={'p' * 2000}", "jobs_ro"),
    ],
)
async def test_long_value_is_400_and_nats_stays_up(
    hr: Stack, client: Client, method: str, path: str, token: str
) -> None:
    status, body = await client.request(method, path, token=TOKENS[token][0])
    assert status == _refused(path), (status, body)
    assert isinstance(body, dict) and body["code"] == "bad_request" and "parameter" in body, body
    assert hr.api.bus is not None and hr.api.bus.nc.is_connected
    job_id = await client.submit("echo", "handle", {"after": "long id"})
    assert (await client.wait_job(job_id))["status"] == "succeeded"


@pytest.mark.parametrize(
    "path",
    [
        "/job/%00",
        "/job/a%00b/cancel",
        "/jobs?plugin=%00",
        "/jobs?command=a%00",
        "/job-logs?query=%00",
        "/api/traces?agent=%00",
        "/api/prompts/%00",
        "/plugin/echo/%01",
        "/events?type=%00",
    ],
)
async def test_nul_is_json_400(hr: Stack, client: Client, path: str) -> None:
    method = "POST" if path.endswith("/cancel") or path.startswith("/plugin/") else "GET"
    status, body = await client.request(method, path)
    assert status == _refused(path), (path, status, body)
    assert isinstance(body, dict) and body["code"] == "bad_request", body


async def test_long_idempotency_key_is_400(hr: Stack, client: Client) -> None:
    status, body = await client.post(
        "/plugin/echo/handle", json={"payload": {}}, headers={"Idempotency-Key": "k" * 3000}
    )
    assert status == 400 and body["header"] == "Idempotency-Key", body

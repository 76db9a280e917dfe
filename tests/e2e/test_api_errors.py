"""Bad input is a feature: every error is a clear JSON 4xx, never a 500 and never a lost job."""

from __future__ import annotations

import pytest

from tests.support.stack import TOKENS, Client


def tok(name: str) -> str:
    return TOKENS[name][0]


async def test_missing_and_unknown_tokens_are_401(client: Client) -> None:
    for path, method in (("/job/x", "GET"), ("/plugin/echo/poll", "POST")):
        status, body = await client.request(method, path, token=None)
        assert status == 401, (path, body)
        assert body["code"] == "unauthorized" and "token" in body["error"]
        status, body = await client.request(method, path, token="not-a-real-token")
        assert status == 401
    status, body = await client.get("/job/x", token=None, headers={"Authorization": "Basic abc"})
    assert status == 401


@pytest.mark.parametrize(
    ("token", "expected"),
    [("admin", 202), ("plugin_rw", 202), ("plugin_ro", 403), ("jobs_ro", 403), ("jobs_rw", 403), ("events_ro", 403)],
)
async def test_scopes_for_a_write_command(client: Client, token: str, expected: int) -> None:
    status, body = await client.post("/plugin/echo/poll", json={"payload": {}}, token=tok(token))
    assert status == expected, body
    if expected == 403:
        assert body["code"] == "forbidden" and "scope" in body["error"]


@pytest.mark.parametrize(
    ("token", "expected"),
    [("admin", 404), ("jobs_ro", 404), ("jobs_rw", 404), ("plugin_rw", 403), ("plugin_ro", 403), ("events_ro", 403)],
)
async def test_scopes_for_reading_a_job(client: Client, token: str, expected: int) -> None:
    status, body = await client.get("/job/does-not-exist", token=tok(token))
    assert status == expected, body


async def test_malformed_json_is_400(client: Client) -> None:
    status, body = await client.post(
        "/plugin/echo/poll", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert status == 400 and body["code"] == "bad_request" and "JSON" in body["error"]


@pytest.mark.parametrize("raw", [b"[1,2]", b'"text"', b"42", b'{"payload": [1]}', b'{"payload": "x"}'])
async def test_wrong_types_are_400(client: Client, raw: bytes) -> None:
    status, body = await client.post("/plugin/echo/poll", data=raw, headers={"Content-Type": "application/json"})
    assert status == 400, body
    assert isinstance(body["error"], str)


async def test_unknown_plugin_command_and_job_are_404(client: Client) -> None:
    status, body = await client.post("/plugin/nope/poll", json={})
    assert status == 404 and "nope" in body["error"]
    status, body = await client.post("/plugin/echo/nope", json={})
    assert status == 404 and "nope" in body["error"] and "poll" in body["commands"]
    status, body = await client.get("/job/0192f000-0000-7000-8000-000000000000")
    assert status == 404 and body["code"] == "not_found"
    status, body = await client.get("/job/has.dots.and*stars")
    assert status == 404


async def test_unknown_route_and_method_are_json(client: Client) -> None:
    status, body = await client.get("/no/such/route")
    assert status == 404 and body["code"] == "not_found"
    status, body = await client.request("DELETE", "/plugin/echo/poll")
    assert status == 405 and body["code"] == "method_not_allowed"


async def test_oversized_body_is_413(client: Client) -> None:
    big = b'{"payload": {"x": "' + b"a" * (1024 * 1024 + 10) + b'"}}'
    status, body = await client.post("/plugin/echo/poll", data=big, headers={"Content-Type": "application/json"})
    assert status == 413 and body["code"] == "payload_too_large"


async def test_empty_body_is_an_empty_payload(client: Client) -> None:
    status, body = await client.post("/plugin/echo/poll", data=b"")
    assert status == 202
    done = await client.wait_job(body["job_id"])
    assert done["status"] == "succeeded"


async def test_discovery_index_and_health_are_open(client: Client) -> None:
    status, body = await client.get("/", token=None)
    assert status == 200
    assert body["discovery"]["health"] == "/healthz" and body["service"] == "Headrace" and body["status"] == "running"
    assert {"version", "docs", "uptime_seconds"} <= body.keys()
    status, body = await client.get("/healthz", token=None)
    assert status == 200 and body["status"] == "ok"
    assert body["plugins_loaded"] >= 2 and body["queue_depth"] == 0
    assert {"uptime_seconds", "version"} <= body.keys()
    assert "config_path" not in body and "binary_path" not in body  # internals only for an admin token
    status, body = await client.get("/healthz")
    assert status == 200 and {"uptime_seconds", "config_path", "binary_path", "version"} <= body.keys()


async def test_huge_or_bad_paging_is_400_never_500(client: Client) -> None:
    paged = ("?offset=100000000000000000000", "?limit=abc", "?limit=-1", "?offset=1.5")
    for path, queries in [
        (p, paged) for p in ("/jobs", "/job-logs", "/api/jobs", "/api/prompts", "/events/rejected")
    ] + [("/api/traces", paged[1:3])]:
        for query in queries:
            status, body = await client.get(path + query)
            # Laddr's paths answer FastAPI's 422 for a parameter they refuse (services/api/laddr_dialect.py)
            assert status == (422 if path.startswith("/api/") else 400), (path, query, status, body)
            assert "parameter" in body or "limit" in body["error"] or "offset" in body["error"]

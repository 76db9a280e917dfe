"""`api.limits` over real sockets: silent, dribbling and idle connections are closed, the
connection cap refuses the excess quickly, SSE streams per token and request rates are capped
(429 with Retry-After), and what aiohttp's parser refuses (or a body that is not the
Content-Encoding it claims) is a JSON 4xx."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import hmac
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import pytest

from tests.support import stack
from tests.support.infra import wait_until
from tests.support.stack import TOKENS, Client, Stack


def limited_config(make_config: Any, **limits: Any) -> Any:
    api = {**stack.config_doc()["api"], "limits": limits}
    return make_config(api=api)


async def open_raw(s: Stack) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    url = urlsplit(s.url)
    return await asyncio.open_connection(url.hostname, url.port)


async def closed_within(reader: asyncio.StreamReader, timeout_s: float) -> bytes:
    """Everything the server sent until it closed the connection (fails if it stays open)."""
    return await asyncio.wait_for(reader.read(), timeout=timeout_s)


def json_of(raw: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, orjson.loads(body)


async def test_silent_dribbling_and_idle_connections_are_closed(make_config: Any, start_stack: Any) -> None:
    s = await start_stack(limited_config(make_config, header_timeout="1s", idle_timeout="1.5s"))
    # opens and sends nothing
    reader, writer = await open_raw(s)
    started = time.monotonic()
    assert await closed_within(reader, 5) == b""
    assert 0.8 < time.monotonic() - started < 3
    writer.close()
    # dribbles a header line every 0.3 s, never finishing the head
    reader, writer = await open_raw(s)
    started = time.monotonic()
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")

    async def dribble() -> None:
        for i in range(30):
            await asyncio.sleep(0.3)
            writer.write(b"X-Slow-%d: 1\r\n" % i)

    task = asyncio.create_task(dribble())
    try:
        assert await closed_within(reader, 5) == b""
        assert time.monotonic() - started < 3
    finally:
        task.cancel()
        writer.close()
    # a kept-alive connection idle after its response is closed after idle_timeout
    reader, writer = await open_raw(s)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert first.startswith(b"HTTP/1.1 200"), first
    started = time.monotonic()
    await closed_within(reader, 6)
    assert 1.0 < time.monotonic() - started < 4
    writer.close()
    # and the service still works
    job_id = await s.client.submit("echo", "poll", {})
    assert (await s.client.wait_job(job_id))["status"] == "succeeded"


async def test_connection_cap_evicts_idle_and_refuses_when_busy(make_config: Any, start_stack: Any) -> None:
    cap = 6
    s = await start_stack(limited_config(make_config, max_connections=cap, header_timeout="30s", sse_per_token=cap * 2))
    await s.client.close()  # its pooled keep-alive connection would count against the cap
    # idle connections fill the cap, but cannot lock out a client with a request to make
    idle = [await open_raw(s) for _ in range(cap)]
    try:
        async with aiohttp.ClientSession() as session, session.get(s.url + "/healthz") as resp:
            assert resp.status == 200
        assert await closed_within(idle[0][0], 2) == b""  # the oldest idle one made room
    finally:
        for _, writer in idle:
            writer.close()
    await asyncio.sleep(0.3)
    # connections with a request in flight (event streams) are never evicted: past the cap, 503 and close
    busy = []
    try:
        for _ in range(cap):
            reader, writer = await open_raw(s)
            writer.write(f"GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {stack.ADMIN}\r\n\r\n".encode())
            assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 200")
            busy.append(writer)
        reader, writer = await open_raw(s)
        started = time.monotonic()
        refused = await closed_within(reader, 2)
        writer.close()
        assert time.monotonic() - started < 1
        status, headers, body = json_of(refused)
        assert status == 503 and body["code"] == "overloaded" and headers["connection"] == "close"
    finally:
        for writer in busy:
            writer.close()

    async def served() -> bool:  # the streams' handlers notice their clients went away within IDLE_CHECK_S
        try:
            async with aiohttp.ClientSession() as session, session.get(s.url + "/healthz") as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False

    await wait_until(served, what="the closed streams' connections to be freed")


async def test_sse_streams_per_token_are_capped(make_config: Any, start_stack: Any) -> None:
    s = await start_stack(limited_config(make_config, sse_per_token=2))
    token = TOKENS["events_ro"][0]
    auth = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as session:
        streams = [await session.get(s.url + "/events", headers=auth) for _ in range(2)]
        try:
            assert [r.status for r in streams] == [200, 200]
            async with session.get(s.url + "/events", headers=auth) as third:
                assert third.status == 429 and third.headers["Retry-After"]
                body = await third.json()
                assert body["code"] == "too_many_streams" and body["limit"] == 2
            async with session.get(s.url + f"/events?token={token}") as by_query:
                assert by_query.status == 429
            async with session.get(s.url + "/events", headers={"Authorization": f"Bearer {stack.ADMIN}"}) as other:
                assert other.status == 200  # another token has its own slots
        finally:
            streams[0].close()

        async def slot_free() -> bool:  # the server notices the client went away within IDLE_CHECK_S
            async with session.get(s.url + "/events", headers=auth) as again:
                return again.status == 200

        await wait_until(slot_free, what="the closed stream's slot to be free again")
        streams[1].close()


async def test_rate_limit_answers_429_with_retry_after(make_config: Any, start_stack: Any) -> None:
    s = await start_stack(limited_config(make_config, rate={"per_second": 1, "burst": 3}))
    jobs_ro = TOKENS["jobs_ro"][0]
    statuses = [(await s.client.get("/jobs", token=jobs_ro))[0] for _ in range(3)]
    assert statuses == [200, 200, 200]
    async with (
        aiohttp.ClientSession() as session,
        session.get(s.url + "/jobs", headers={"Authorization": f"Bearer {jobs_ro}"}) as resp,
    ):
        assert resp.status == 429
        assert int(resp.headers["Retry-After"]) >= 1
        body = await resp.json()
        assert body["code"] == "rate_limited" and body["retry_after"] >= 1
    assert (await s.client.get("/jobs"))[0] == 200  # the admin token has its own bucket
    await asyncio.sleep(1.1)
    assert (await s.client.get("/jobs", token=jobs_ro))[0] == 200  # refilled


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /jobs?" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: 1\r\n" % i for i in range(1000)) + b"\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 9000 + b"\r\n\r\n",
        b"POST /plugin/echo/poll HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
        b"POST /plugin/echo/poll HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Encoding: br\r\n\r\n{}",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http at all\r\n\r\n",
    ],
)
async def test_parser_errors_are_json(hr: Stack, request_bytes: bytes) -> None:
    reader, writer = await open_raw(hr)
    writer.write(request_bytes)
    await writer.drain()
    raw = await closed_within(reader, 5)
    writer.close()
    status, headers, body = json_of(raw)
    assert 400 <= status < 500, raw
    assert headers["content-type"].startswith("application/json"), raw
    assert body["code"] and body["error"], body
    assert "aaaa" not in body["error"]  # the refused bytes are not echoed back


async def test_body_not_in_its_content_encoding_is_400(
    hr: Stack, client: Client, make_config: Any, start_stack: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    junk = b"this is not gzip"
    for encoding in ("gzip", "deflate"):
        status, body = await client.post(
            "/plugin/echo/poll", data=junk, headers={"Content-Type": "application/json", "Content-Encoding": encoding}
        )
        assert status == 400 and body["code"] == "bad_request" and encoding in body["error"], body
    status, body = await client.post("/plugin/echo/poll", data=b"{}", headers={"Content-Encoding": "compress"})
    assert status == 415 and body["code"] == "unsupported_content_encoding", body
    status, body = await client.post(
        "/plugin/echo/poll",
        data=gzip.compress(b'{"payload": {"z": 1}}'),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert status == 202, body  # a real gzip body is fine
    # webhooks too
    monkeypatch.setenv("HR_TEST_HOOK_SECRET", "hook-secret-123")
    s = await start_stack(
        make_config(
            webhooks=[
                {
                    "name": "h",
                    "path": "/hooks/h",
                    "plugin": "echo",
                    "secret_ref": "HR_TEST_HOOK_SECRET",
                    "signature_header": "X-Sig",
                }
            ]
        )
    )
    signature = hmac.new(b"hook-secret-123", junk, hashlib.sha256).hexdigest()
    status, body = await s.client.post(
        "/hooks/h", data=junk, token=None, headers={"X-Sig": signature, "Content-Encoding": "gzip"}
    )
    assert status == 400 and body["code"] == "bad_request", body
    job_id = await client.submit("echo", "poll", {})
    assert (await client.wait_job(job_id))["status"] == "succeeded"


async def test_405_names_the_allowed_methods(hr: Stack, client: Client) -> None:
    status, body = await client.request("DELETE", "/jobs")
    assert status == 405 and body["code"] == "method_not_allowed"
    async with aiohttp.ClientSession() as session, session.delete(hr.url + "/job/abc") as resp:
        assert resp.status == 405
        assert "GET" in resp.headers["Allow"]

"""GET /events: the event log as server-sent events — live events of a submitted job, resume
after a stream sequence (`Last-Event-ID` or `?last_event_id=`), `?type=` and `?job_id=` filters,
heartbeats, auth (401 without a token, `?token=` for browsers), and the NATS subscription
closed when the client goes away."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson

from services.core import subjects
from tests.support.infra import wait_until
from tests.support.stack import ADMIN, TOKENS, Stack

EVENTS_RO = TOKENS["events_ro"][0]


class SseReader:
    """A minimal EventSource: parses `id:`/`event:`/`data:` blocks and counts `:` comments."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        self.comments = 0

    async def next(self, timeout_s: float = 10.0) -> dict[str, Any]:
        return await asyncio.wait_for(self._next(), timeout=timeout_s)

    async def _next(self) -> dict[str, Any]:
        event: dict[str, Any] = {}
        data: list[str] = []
        while True:
            raw = await self.resp.content.readline()
            if not raw:
                raise EOFError("stream closed")
            line = raw.decode().rstrip("\r\n")
            if line == "":
                if data or event:
                    event["data"] = orjson.loads("\n".join(data)) if data else None
                    return event
                continue
            if line.startswith(":"):
                self.comments += 1
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "data":
                data.append(value)
            else:
                event[field] = value

    async def collect(self, predicate: Any, count: int, timeout_s: float = 15.0) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(out) < count:
            event = await self.next(max(0.1, deadline - asyncio.get_running_loop().time()))
            if predicate(event):
                out.append(event)
        return out


class Streams:
    def __init__(self, s: Stack) -> None:
        self.base = s.url
        self.session = aiohttp.ClientSession()
        self.open: list[aiohttp.ClientResponse] = []

    async def connect(
        self, query: str = "", *, token: str | None = ADMIN, headers: dict[str, str] | None = None
    ) -> tuple[int, SseReader]:
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        # these tests read the event log itself (envelopes); the Ductile view is tests/conformance/ductile
        query += ("&" if "?" in query else "?") + "format=log"
        resp = await self.session.get(f"{self.base}/events{query}", headers=hdrs)
        self.open.append(resp)
        return resp.status, SseReader(resp)

    async def close(self) -> None:
        for resp in self.open:
            resp.close()
        await self.session.close()


async def test_live_events_of_a_submitted_job_and_resume_after_a_sequence(hr: Stack) -> None:
    streams = Streams(hr)
    try:
        status, live = await streams.connect("?type=job.")
        assert status == 200 and live.resp.headers["Content-Type"].startswith("text/event-stream")
        assert hr.client is not None
        job_id = await hr.client.submit("echo_py", "poll", {"message": "hi"})
        mine = await live.collect(lambda e: e["data"]["job_id"] == job_id and e["event"] != "job.log", 3)
        assert [e["event"] for e in mine] == ["job.queued", "job.started", "job.succeeded"]
        for e in mine:
            assert e["data"]["type"] == e["event"] and e["data"]["id"]
        seqs = [int(e["id"]) for e in mine]
        assert seqs == sorted(seqs)
        assert hr.api.bus is not None
        last = await hr.api.bus.last_message(subjects.EVENTS, subjects.job_event(job_id, "succeeded"))
        assert last is not None and last[0] == seqs[2]

        # resume after the queued event: only what came later, from the log
        after = seqs[0]
        status, resumed = await streams.connect(f"?job_id={job_id}", headers={"Last-Event-ID": str(after)})
        assert status == 200
        later = await resumed.collect(lambda e: e["event"] == "job.succeeded", 1)
        assert int(later[0]["id"]) == seqs[2]
        # the query-parameter form, with a type filter: exactly the succeeded event
        status, typed = await streams.connect(
            f"?last_event_id={after}&type=job.succeeded", token=None, headers={"Authorization": f"Bearer {EVENTS_RO}"}
        )
        first = await typed.next()
        assert first["event"] == "job.succeeded" and int(first["id"]) == seqs[2]
    finally:
        await streams.close()


async def test_filters_by_job_and_by_type(hr: Stack) -> None:
    assert hr.client is not None
    streams = Streams(hr)
    try:
        # one after the other: two jobs running at once (echo_py runs four) may end in either order
        one = await hr.client.submit("echo_py", "poll", {"message": "one"})
        await hr.client.wait_job(one)
        two = await hr.client.submit("echo_py", "poll", {"message": "two"})
        await hr.client.wait_job(two)
        _, only_two = await streams.connect(f"?job_id={two}&last_event_id=0")
        got = await only_two.collect(lambda e: True, 3)
        assert {e["data"]["job_id"] for e in got} == {two}
        _, succeeded = await streams.connect("?type=job.succeeded&last_event_id=0")
        got = await succeeded.collect(lambda e: True, 2)
        assert [e["event"] for e in got] == ["job.succeeded", "job.succeeded"]
        assert [e["data"]["job_id"] for e in got] == [one, two]
        status, _ = await streams.connect("?job_id=bad.id")
        assert status == 400
        status, _ = await streams.connect("?last_event_id=yesterday")
        assert status == 400
    finally:
        await streams.close()


async def test_auth_heartbeats_and_closing(hr: Stack) -> None:
    streams = Streams(hr)
    try:
        status, _ = await streams.connect(token=None)
        assert status == 401
        status, _ = await streams.connect(token=TOKENS["jobs_ro"][0])
        assert status == 403
        status, _ = await streams.connect(f"?token={TOKENS['plugin_ro'][0]}", token=None)
        assert status == 403
        assert hr.api.bus is not None
        bus = hr.api.bus
        before = (await bus.js.stream_info(subjects.EVENTS)).state.consumer_count
        status, browser = await streams.connect(f"?token={EVENTS_RO}&heartbeat=1", token=None)
        assert status == 200
        during = (await bus.js.stream_info(subjects.EVENTS)).state.consumer_count
        assert during == before + 1

        async def heartbeat() -> None:
            while not (await browser.resp.content.readline()).startswith(b":"):
                pass

        await asyncio.wait_for(heartbeat(), timeout=5)  # a `: ping` comment within a few seconds
        browser.resp.close()

        async def released() -> bool:
            return (await bus.js.stream_info(subjects.EVENTS)).state.consumer_count == before

        await wait_until(released, timeout_s=10, what="the stream's consumer to go away")
    finally:
        await streams.close()

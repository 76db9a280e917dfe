"""The cluster test's load: a fixed number of submissions (a seeded mix of in-process `echo_py`,
subprocess `echo` and the two-step `ingest` pipeline) sent as fast as a pool of HTTP clients can,
spread over every API process, the way a careful client behind a load balancer sends them.

Each submission carries an `Idempotency-Key` and is sent again with the same key and bytes until
some API answers 202: a refused connection goes to the other API at once, a dropped connection or
a timeout (answer unknown: the job may exist) is sent again to the other API, a 503 is retried, and
a 409 "still in progress" (a request that died halfway holds the key) is retried later without
holding up the client's next submission.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import random
import time

import aiohttp
import orjson

#: kind → (path, weight in the mix)
MIX = {
    "echo_py": ("/plugin/echo_py/poll", 0.82),
    "echo": ("/plugin/echo/poll", 0.08),
    "pipeline": ("/pipeline/ingest", 0.10),
}
PIPELINE_KINDS = frozenset({"pipeline"})


@dataclasses.dataclass(slots=True)
class Submission:
    n: int
    key: str
    kind: str
    path: str
    body: bytes
    job_id: str | None = None
    requests: int = 0
    unknown: int = 0
    refused: int = 0
    unavailable: int = 0
    in_progress: int = 0
    replayed: bool = False
    error: str | None = None
    #: the API (index) that answered 202
    answered_by: int | None = None


class ClusterLoad:
    def __init__(
        self,
        api_urls: list[str],
        *,
        token: str,
        seed: int,
        total: int,
        clients: int = 32,
        request_timeout_s: float = 15.0,
        give_up_after_s: float = 120.0,
    ) -> None:
        self.api_urls = api_urls
        self.token = token
        self.rng = random.Random(seed)
        self.total = total
        self.clients = clients
        self.timeout = aiohttp.ClientTimeout(total=request_timeout_s)
        self.give_up_after_s = give_up_after_s
        self.submissions: list[Submission] = []
        self.requests_in_flight = 0
        #: submissions parked on a 409 "in progress", retried by their own task
        self.parked: list[asyncio.Task[None]] = []
        self.started_at = 0.0
        self.finished_at = 0.0

    def accepted(self) -> list[Submission]:
        return [s for s in self.submissions if s.job_id is not None]

    def kinds(self) -> collections.Counter[str]:
        return collections.Counter(s.kind for s in self.accepted())

    def _next(self) -> Submission | None:
        n = len(self.submissions)
        if n >= self.total:
            return None
        kind = self.rng.choices(list(MIX), weights=[w for _, w in MIX.values()])[0]
        key = f"cluster-{n}"
        sub = Submission(n, key, kind, MIX[kind][0], orjson.dumps({"payload": {"message": key}}))
        self.submissions.append(sub)
        return sub

    async def run(self) -> None:
        self.started_at = time.monotonic()
        connector = aiohttp.TCPConnector(limit=self.clients * 2)
        async with aiohttp.ClientSession(timeout=self.timeout, connector=connector) as session:
            await asyncio.gather(*(self._client(session, i) for i in range(self.clients)))
            while self.parked:
                await self.parked.pop()
        self.finished_at = time.monotonic()

    async def _client(self, session: aiohttp.ClientSession, index: int) -> None:
        while (sub := self._next()) is not None:
            await self.submit(session, sub, first_api=index % len(self.api_urls), park=True)

    async def submit(self, session: aiohttp.ClientSession, sub: Submission, *, first_api: int, park: bool) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.give_up_after_s
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Content-Type": "application/json",
            "Idempotency-Key": sub.key,
        }
        api = first_api
        while True:
            answer = await self._post(session, sub, api, headers)
            if answer is not None:
                status, raw, replayed = answer
                if status == 202:
                    sub.job_id, sub.replayed, sub.answered_by = orjson.loads(raw)["job_id"], replayed, api
                    return
                if status == 503:
                    sub.unavailable += 1
                elif status == 409 and b"in progress" in raw:
                    sub.in_progress += 1
                    if park:  # the key's claim outlives the dead request: retry it aside
                        self.parked.append(asyncio.create_task(self._later(session, sub, api)))
                        return
                    await asyncio.sleep(1.0)
                else:
                    sub.error = f"HTTP {status}: {raw[:300]!r}"
                    return
            else:
                api = (api + 1) % len(self.api_urls)  # no answer: the other API
            if loop.time() > deadline:
                sub.error = f"not accepted within {self.give_up_after_s}s ({sub.requests} requests)"
                return
            await asyncio.sleep(0.05 if answer is None else 0.2)

    async def _later(self, session: aiohttp.ClientSession, sub: Submission, api: int) -> None:
        await asyncio.sleep(1.0)
        await self.submit(session, sub, first_api=api, park=False)

    async def _post(
        self, session: aiohttp.ClientSession, sub: Submission, api: int, headers: dict[str, str]
    ) -> tuple[int, bytes, bool] | None:
        """One request: (status, body, replayed), or None when no answer came."""
        sub.requests += 1
        self.requests_in_flight += 1
        try:
            async with session.post(self.api_urls[api] + sub.path, data=sub.body, headers=headers) as resp:
                return resp.status, await resp.read(), resp.headers.get("Idempotent-Replayed") == "true"
        except aiohttp.ClientConnectorError:
            sub.refused += 1
        except (aiohttp.ClientError, TimeoutError):
            sub.unknown += 1
        finally:
            self.requests_in_flight -= 1
        return None

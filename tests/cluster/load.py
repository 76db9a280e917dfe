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
import random
import time

import aiohttp
import orjson

from tests.chaos.load import KeyedPoster, Submission

#: kind → (path, weight in the mix)
MIX = {
    "echo_py": ("/plugin/echo_py/poll", 0.82),
    "echo": ("/plugin/echo/poll", 0.08),
    "pipeline": ("/pipeline/ingest", 0.10),
}
PIPELINE_KINDS = frozenset({"pipeline"})


class ClusterLoad(KeyedPoster):
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
        super().__init__(token)
        self.api_urls = api_urls
        self.rng = random.Random(seed)
        self.total = total
        self.clients = clients
        self.timeout = aiohttp.ClientTimeout(total=request_timeout_s)
        self.give_up_after_s = give_up_after_s
        self.submissions: list[Submission] = []
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
        sub = Submission(n=n, key=key, kind=kind, path=MIX[kind][0], body=orjson.dumps({"payload": {"message": key}}))
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
        api = first_api
        while True:
            answer = await self.post_once(session, self.api_urls[api] + sub.path, sub)
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

"""The chaos run's load: a few HTTP clients submitting a seeded mix of work (in-process
`echo_py`, subprocess `echo`, the slow `slow_recorder`, a two-step pipeline) the way a careful
client does while the system is being killed under it.

Every request carries an `Idempotency-Key` and is retried with the same key and the same bytes
until it is answered 202: a dropped connection or a timeout means the answer is unknown (the
job may exist), a refused connection or a 503 means the service is down, a 409 "still in
progress" means a request that died halfway holds the key. The job id of the first 202 is the
one the client knows; a second job created for the same key would be a double.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

#: kind → weight in the mix
MIX = {"echo_py": 0.45, "echo": 0.25, "slow": 0.15, "pipeline": 0.15}
PIPELINE = "chaos_pipe"
#: a synchronous pipeline: its request is answered only when the run is over, so a client that
#: holds one open while the API is killed has certainly lost the answer to a job that exists
HELD_PIPELINE = "chaos_held"
#: plugins that record their runs → the payload key naming the file they append to
RECORDERS = {"slow_recorder": "record_file", "napper": "marker"}
#: pipeline kinds: their root job also ends with job.failed
PIPELINE_KINDS = frozenset({"pipeline", "held"})


@dataclasses.dataclass(slots=True)
class Submission:
    n: int
    key: str
    kind: str
    path: str
    body: bytes
    #: where a recording plugin appends a line per run of this submission (slow_recorder:
    #: "start|end <ns> <pid>", napper: "<job id> <pid>" when it starts)
    record_file: Path | None = None
    recorder: str | None = None
    job_id: str | None = None
    requests: int = 0
    #: sent, but the answer never came (connection dropped mid-request, timeout)
    unknown: int = 0
    #: not sent: nothing listened
    refused: int = 0
    unavailable: int = 0
    in_progress: int = 0
    replayed: bool = False
    error: str | None = None
    #: time.monotonic() of its first request, and of the answer with its job id
    sent_at: float = 0.0
    answered_at: float = 0.0
    #: which API process answered 202 (tests/cluster: an index into its API URLs)
    answered_by: int | None = None


class KeyedPoster:
    """One keyed POST of a submission, counted on it (requests, refused, unknown answers) and on the load
    (requests in flight): what the chaos load and the cluster load (tests/cluster/load.py) share."""

    def __init__(self, token: str) -> None:
        self.token = token
        #: HTTP requests sent and not answered yet
        self.requests_in_flight = 0

    def headers(self, sub: Submission) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.token}",
            "Content-Type": "application/json",
            "Idempotency-Key": sub.key,
        }

    async def post_once(
        self, session: aiohttp.ClientSession, url: str, sub: Submission
    ) -> tuple[int, bytes, bool] | None:
        """One request: (status, body, replayed), or None when no answer came."""
        sub.requests += 1
        self.requests_in_flight += 1
        try:
            async with session.post(url, data=sub.body, headers=self.headers(sub)) as resp:
                return resp.status, await resp.read(), resp.headers.get("Idempotent-Replayed") == "true"
        except aiohttp.ClientConnectorError:
            sub.refused += 1
        except (aiohttp.ClientError, TimeoutError):
            sub.unknown += 1
        finally:
            self.requests_in_flight -= 1
        return None


class Load(KeyedPoster):
    def __init__(
        self,
        base_url: str,
        *,
        token: str,
        seed: int,
        runs_dir: Path,
        workers: int = 4,
        pause_s: tuple[float, float] = (0.2, 0.4),
        request_timeout_s: float = 15.0,
        give_up_after_s: float = 90.0,
    ) -> None:
        super().__init__(token)
        self.base_url = base_url
        self.rng = random.Random(seed)
        self.runs_dir = runs_dir
        self.workers = workers
        self.pause_s = pause_s
        self.timeout = aiohttp.ClientTimeout(total=request_timeout_s)
        self.give_up_after_s = give_up_after_s
        self.submissions: list[Submission] = []
        #: while set, the workers submit back to back (a kill then catches requests mid-flight)
        self.burst = False
        self.session: aiohttp.ClientSession | None = None
        #: submissions started outside the workers (held requests), finished before run() returns
        self.extra: list[asyncio.Task[None]] = []

    def accepted(self) -> list[Submission]:
        return [s for s in self.submissions if s.job_id is not None]

    def _next(self) -> Submission:
        """The n-th submission of this seed (kinds and payloads do not depend on timing)."""
        kind = self.rng.choices(list(MIX), weights=list(MIX.values()))[0]
        if kind in ("echo_py", "echo"):
            return self._new(kind, f"/plugin/{kind}/poll", lambda key: {"message": key})
        path = "/plugin/slow_recorder/poll" if kind == "slow" else f"/pipeline/{PIPELINE}"
        return self._new(kind, path, seconds=round(self.rng.uniform(0.3, 1.2), 2))

    def _new(
        self, kind: str, path: str, payload: Any = None, *, seconds: float = 0.0, recorder: str = "slow_recorder"
    ) -> Submission:
        n = len(self.submissions)
        key = f"chaos-{n}"
        record_file = None
        if payload is not None:
            body = payload(key)
        else:  # runs of a recording plugin: in a file of their own (its payload key is the plugin's)
            record_file = self.runs_dir / f"{key}.log"
            body = {RECORDERS[recorder]: str(record_file), "seconds": seconds}
        sub = Submission(
            n=n,
            key=key,
            kind=kind,
            path=path,
            body=orjson.dumps({"payload": body}),
            record_file=record_file,
            recorder=recorder if record_file else None,
        )
        self.submissions.append(sub)
        return sub

    def hold(self, seconds: float) -> Submission:
        """Start a synchronous pipeline run whose napper step takes `seconds` (the request stays open).
        napper serves only these, so the step starts at once even behind a backlog of slow_recorder work."""
        assert self.session is not None
        sub = self._new("held", f"/pipeline/{HELD_PIPELINE}", seconds=seconds, recorder="napper")
        self.extra.append(asyncio.create_task(self.submit(self.session, sub)))
        return sub

    async def run(self, stop: asyncio.Event) -> None:
        """Submit until `stop` is set, then finish (or give up on) the submissions under way."""
        async with aiohttp.ClientSession(timeout=self.timeout) as self.session:
            await asyncio.gather(*(self._worker(self.session, stop) for _ in range(self.workers)))
            await asyncio.gather(*self.extra)

    async def _worker(self, session: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.submit(session, self._next())
            await asyncio.sleep(0 if self.burst else self.rng.uniform(*self.pause_s))

    async def submit(self, session: aiohttp.ClientSession, sub: Submission) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.give_up_after_s
        sub.sent_at = time.monotonic()
        while True:
            answer = await self.post_once(session, self.base_url + sub.path, sub)
            if answer is not None:
                status, raw, replayed = answer
                if status == 202 or (status == 200 and sub.kind == "held"):
                    sub.job_id, sub.replayed = orjson.loads(raw)["job_id"], replayed
                    sub.answered_at = time.monotonic()
                    return
                if status == 503:
                    sub.unavailable += 1
                elif status == 409 and b"in progress" in raw:
                    sub.in_progress += 1
                else:
                    sub.error = f"HTTP {status}: {raw[:300]!r}"
                    return
            if loop.time() > deadline:
                sub.error = f"not accepted within {self.give_up_after_s}s ({sub.requests} requests)"
                return
            await asyncio.sleep(1.0 if sub.in_progress else 0.2)  # a claim held by a dead request lasts 30 s

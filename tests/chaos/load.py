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
from pathlib import Path

import aiohttp
import orjson

#: kind → weight in the mix
MIX = {"echo_py": 0.45, "echo": 0.25, "slow": 0.15, "pipeline": 0.15}
PIPELINE = "chaos_pipe"


@dataclasses.dataclass(slots=True)
class Submission:
    n: int
    key: str
    kind: str
    path: str
    body: bytes
    #: where slow_recorder appends "start|end <ns> <pid>" for this submission's run(s)
    record_file: Path | None = None
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


class Load:
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
        self.base_url = base_url
        self.token = token
        self.rng = random.Random(seed)
        self.runs_dir = runs_dir
        self.workers = workers
        self.pause_s = pause_s
        self.timeout = aiohttp.ClientTimeout(total=request_timeout_s)
        self.give_up_after_s = give_up_after_s
        self.submissions: list[Submission] = []

    def accepted(self) -> list[Submission]:
        return [s for s in self.submissions if s.job_id is not None]

    def _next(self) -> Submission:
        """The n-th submission of this seed (kinds and payloads do not depend on timing)."""
        n = len(self.submissions)
        kind = self.rng.choices(list(MIX), weights=list(MIX.values()))[0]
        key = f"chaos-{n}"
        record_file = None
        if kind in ("echo_py", "echo"):
            path, payload = f"/plugin/{kind}/poll", {"message": key}
        else:
            record_file = self.runs_dir / f"{key}.log"
            payload = {"record_file": str(record_file), "seconds": round(self.rng.uniform(0.3, 1.2), 2)}
            path = "/plugin/slow_recorder/poll" if kind == "slow" else f"/pipeline/{PIPELINE}"
        sub = Submission(
            n=n, key=key, kind=kind, path=path, body=orjson.dumps({"payload": payload}), record_file=record_file
        )
        self.submissions.append(sub)
        return sub

    async def run(self, stop: asyncio.Event) -> None:
        """Submit until `stop` is set, then finish (or give up on) the submissions under way."""
        async with aiohttp.ClientSession(timeout=self.timeout) as session:
            await asyncio.gather(*(self._worker(session, stop) for _ in range(self.workers)))

    async def _worker(self, session: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.submit(session, self._next())
            await asyncio.sleep(self.rng.uniform(*self.pause_s))

    async def submit(self, session: aiohttp.ClientSession, sub: Submission) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.give_up_after_s
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Content-Type": "application/json",
            "Idempotency-Key": sub.key,
        }
        while True:
            sub.requests += 1
            try:
                async with session.post(self.base_url + sub.path, data=sub.body, headers=headers) as resp:
                    status, raw = resp.status, await resp.read()
                    replayed = resp.headers.get("Idempotent-Replayed") == "true"
            except aiohttp.ClientConnectorError:
                sub.refused += 1
            except (aiohttp.ClientError, TimeoutError):
                sub.unknown += 1
            else:
                if status == 202:
                    sub.job_id, sub.replayed = orjson.loads(raw)["job_id"], replayed
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
            await asyncio.sleep(0.2)

"""A live view of the system during the chaos run, over core NATS subscriptions (`evt.job.>` and
the `breakers` KV bucket): which attempts are in flight, which processes have published, when
a circuit opened. It paces the kills (kill while work is in flight, kill the next one once the
restarted process is back at work); it is never the basis of an assertion about jobs, since it
misses what is published while it reconnects — the audit reads the EVENTS stream itself.
"""

from __future__ import annotations

import collections
import time
from typing import Any

import nats
import orjson
from nats.aio.msg import Msg

OUTCOMES = frozenset({"job.succeeded", "job.failed", "job.timed_out", "job.cancelled"})


class Watcher:
    def __init__(self, url: str) -> None:
        self.url = url
        self.nc: Any = None
        #: (job id, attempt) → plugin, for attempts started and not finished
        self.running: dict[tuple[str, int], str] = {}
        self.sources: set[str] = set()
        #: jobs seen queued
        self.queued: set[str] = set()
        self.counts: collections.Counter[str] = collections.Counter()
        #: (monotonic time, "plugin.command", failures) each time a breaker went open
        self.breaker_opens: list[tuple[float, str, int]] = []
        self._breakers: dict[str, str] = {}
        self.errors = 0

    async def start(self) -> Watcher:
        self.nc = await nats.connect(
            self.url, max_reconnect_attempts=-1, reconnect_time_wait=0.25, name="chaos-watcher", error_cb=self._on_error
        )
        await self.nc.subscribe("evt.job.>", cb=self._on_event)
        await self.nc.subscribe("$KV.breakers.>", cb=self._on_breaker)
        return self

    async def stop(self) -> None:
        if self.nc is not None:
            await self.nc.close()

    async def _on_error(self, exc: Exception) -> None:
        self.errors += 1  # the nats-server is down on purpose; nats-py would log each reconnect failure

    def in_flight(self, plugin: str | None = None) -> int:
        return sum(1 for p in self.running.values() if plugin is None or p == plugin)

    async def _on_event(self, msg: Msg) -> None:
        try:
            env = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            return
        data = env.get("data") or {}
        kind, job_id = env.get("type"), env.get("job_id")
        self.sources.add(str(env.get("source")))
        self.counts[kind] += 1
        key = (str(job_id), int(data.get("attempt") or 0))
        if kind == "job.queued":
            self.queued.add(str(job_id))
        if kind == "job.started" and data.get("plugin") != "pipeline":
            self.running[key] = str(data.get("plugin"))
        elif kind in OUTCOMES:
            self.running.pop(key, None)

    async def _on_breaker(self, msg: Msg) -> None:
        try:
            state = orjson.loads(msg.data) if msg.data else {}
        except orjson.JSONDecodeError:
            return
        if not isinstance(state, dict):
            return
        key = msg.subject.removeprefix("$KV.breakers.")
        previous, self._breakers[key] = self._breakers.get(key), str(state.get("state"))
        if state.get("state") == "open" and previous != "open":
            self.breaker_opens.append((time.monotonic(), key, int(state.get("failures") or 0)))

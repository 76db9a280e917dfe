"""Runner presence: every few seconds a runner puts `runner.<instance>` into the `agents` KV
bucket (what it serves, its capacity, how many attempts it is running, when it was last
seen) and deletes the key when it stops cleanly. Liveness is not domain state, so it lives
in KV (the bucket's TTL sweeps away runners that died without a goodbye), not in events.

`GET /analytics/queue` reads these records; `is_fresh` is the shared rule for "alive".

A runner serving agents also puts `agent.<name>` for each (`GET /api/agents` reads them). Those
keys are shared by every runner of the agent and are not deleted on a clean stop, so an agent
nobody serves any more shows as stale with its `last_seen`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from services.core import envelope, logging, members, subjects

if TYPE_CHECKING:
    from services.runner.service import Runner

log = logging.get("runner.heartbeat")

DEFAULT_INTERVAL_S = members.DEFAULT_INTERVAL_S
#: a runner is counted while its last beat is younger than this many intervals
FRESH_INTERVALS = members.FRESH_INTERVALS
KEY_PREFIX = "runner."
AGENT_KEY_PREFIX = "agent."
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def instance_id() -> str:
    """`<host>-<pid>-<random>`: unique even for two runners in one process (tests, `headrace up`)."""
    return _KEY_UNSAFE.sub("-", f"{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:6]}")


def key_for(instance: str) -> str:
    return KEY_PREFIX + instance


def agent_key(agent: str) -> str:
    return AGENT_KEY_PREFIX + agent


def is_fresh(record: dict[str, Any], now: datetime) -> bool:
    """Whether a presence record was written recently enough to count its runner as alive."""
    return members.is_fresh(record, now)


class Presence:
    """The heartbeat task of one runner: `runner.spawn("presence", Presence(runner).run())`."""

    def __init__(self, runner: Runner, *, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self.runner = runner
        self.interval_s = interval_s
        self.instance = instance_id()
        self.key = key_for(self.instance)
        self.started_at = envelope.rfc3339(envelope.now())

    def plugins(self) -> list[str]:
        """The plugins this runner has a mailbox for (the same choice `Runner.start` makes)."""
        runner = self.runner
        return [
            name
            for name in sorted(runner.catalog.plugins)
            if runner.config.plugin(name).enabled and (not runner.only_plugins or name in runner.only_plugins)
        ]

    def record(self) -> dict[str, Any]:
        return {
            "kind": "runner",
            "instance": self.instance,
            "source": self.runner.source,
            "plugins": self.plugins(),
            "capacity": self.runner.config.max_workers,
            "busy": len(self.runner.running),
            "interval_s": self.interval_s,
            "started_at": self.started_at,
            "last_seen": envelope.rfc3339(envelope.now()),
        }

    def agent_record(self, agent: str) -> dict[str, Any]:
        return {
            "kind": "agent",
            "agent": agent,
            "instance": self.instance,
            "interval_s": self.interval_s,
            "last_seen": envelope.rfc3339(envelope.now()),
        }

    async def beat(self) -> None:
        assert self.runner.bus is not None
        kv = await self.runner.bus.kv(subjects.KV_AGENTS)
        await kv.put(self.key, orjson.dumps(self.record()))
        for agent in getattr(self.runner, "agents_served", ()):
            await kv.put(agent_key(agent), orjson.dumps(self.agent_record(agent)))

    async def clear(self) -> None:
        assert self.runner.bus is not None
        kv = await self.runner.bus.kv(subjects.KV_AGENTS)
        await kv.delete(self.key)

    async def run(self) -> None:
        """Beat until the runner stops, then say goodbye. A failed beat is logged, never fatal."""
        stop = self.runner.stop_event
        while not stop.is_set():
            try:
                await self.beat()
            except Exception as exc:  # a missed beat must never stop the runner
                log.warning("heartbeat_failed", key=self.key, error=str(exc) or type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval_s)
        try:
            await asyncio.wait_for(self.clear(), timeout=2.0)
        except Exception as exc:  # the bucket TTL removes the key anyway
            log.warning("heartbeat_clear_failed", key=self.key, error=str(exc) or type(exc).__name__)

"""Reload members: which services take part in `POST /system/reload`, so the API knows whose answer
to wait for. Every participant (api, dispatcher, runner; services/core/reloads.py) puts
`member.<id>` into the `agents` KV bucket after it subscribed to the reload subjects, again every
heartbeat interval and right after it applied a config (with that config's fingerprint), and
deletes it when it stops cleanly. A member that died without a goodbye stays fresh for
`FRESH_INTERVALS` intervals; the bucket's TTL sweeps the key away later.

`is_fresh` is the one rule for "alive" (runner heartbeats use it too).
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from datetime import datetime
from typing import Any

import nats.errors
import nats.js.errors
import orjson

from services.core import bus as bus_mod
from services.core import envelope, subjects

KEY_PREFIX = "member."
DEFAULT_INTERVAL_S = 5.0
#: a record counts while its last beat is younger than this many intervals
FRESH_INTERVALS = 3
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def member_id(role: str) -> str:
    """`<role>-<host>-<pid>-<random>`: unique even for two services of one role in one process."""
    return _UNSAFE.sub("-", f"{role}-{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:6]}")


def key_for(member: str) -> str:
    return KEY_PREFIX + member


def is_fresh(record: dict[str, Any], now: datetime) -> bool:
    """Whether a presence record was written recently enough to count its writer as alive."""
    try:
        seen = envelope.parse_time(str(record["last_seen"]))
        interval = float(record.get("interval_s") or DEFAULT_INTERVAL_S)
    except (KeyError, TypeError, ValueError):
        return False
    return (now - seen).total_seconds() < FRESH_INTERVALS * interval


def record(
    *, member: str, role: str, source: str, fingerprint: str, interval_s: float, started_at: str
) -> dict[str, Any]:
    return {
        "kind": "member",
        "id": member,
        "role": role,
        "source": source,
        "fingerprint": fingerprint,
        "interval_s": interval_s,
        "started_at": started_at,
        "last_seen": envelope.rfc3339(envelope.now()),
    }


async def beat(bus: bus_mod.Bus, rec: dict[str, Any]) -> None:
    kv = await bus.kv(subjects.KV_AGENTS)
    await kv.put(key_for(str(rec["id"])), orjson.dumps(rec))


async def clear(bus: bus_mod.Bus, member: str) -> None:
    kv = await bus.kv(subjects.KV_AGENTS)
    await kv.delete(key_for(member))


async def alive(bus: bus_mod.Bus) -> list[dict[str, Any]]:
    """The records of the members seen recently (raises nats errors when the bucket is unreadable)."""
    kv = await bus.kv(subjects.KV_AGENTS)
    prefix = f"$KV.{subjects.KV_AGENTS}."
    info = await bus.js.stream_info(f"KV_{subjects.KV_AGENTS}", subjects_filter=prefix + KEY_PREFIX + "*")
    keys = [subject[len(prefix) :] for subject in (info.state.subjects or {})]

    async def read(key: str) -> dict[str, Any] | None:
        try:
            entry = await kv.get(key)
        except nats.js.errors.NotFoundError:  # deleted on a clean stop, or expired
            return None
        except nats.errors.Error:
            return None
        try:
            found = orjson.loads(entry.value or b"")
        except orjson.JSONDecodeError:
            return None
        return found if isinstance(found, dict) and found.get("kind") == "member" else None

    now = envelope.now()
    records = await asyncio.gather(*(read(key) for key in keys))
    return sorted((r for r in records if r is not None and is_fresh(r, now)), key=lambda r: str(r.get("id")))

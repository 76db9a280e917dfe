"""Webhook replay protection: a delivery seen before (same body digest, or same delivery id) within
the webhook's `dedupe_window` creates no second job; it is answered with the first one's response.

Each key of a delivery (services/core/webhooks.dedupe_keys) is claimed in the `dedupe` KV bucket
with `create`, which only one writer can win: of two identical requests at once, one submits the
job and the other waits for its answer. The claim carries the job id before the job is
submitted, so a request that crashed halfway is taken over after `ABANDONED_AFTER_S` and
re-submitted under the same id (the deterministic command id makes that a no-op if the first
submit did get through). Nothing here decides a job's fate: a replay never becomes a job at all.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import nats.js.errors
import orjson

from services.core import envelope, errors
from services.core import webhooks as hooks_mod

#: a claim whose request has not answered after this long is taken over
ABANDONED_AFTER_S = 30.0
#: how long a concurrent duplicate waits for the first request's answer
PENDING_WAIT_S = 5.0
POLL_S = 0.05

Submit = Callable[[str], Awaitable[dict[str, Any]]]


@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    body: dict[str, Any]
    duplicate: bool


def kv_key(hook: hooks_mod.Webhook, key: str) -> str:
    return "wh." + hashlib.sha256(f"{hook.name}\x00{key}".encode()).hexdigest()


async def _claim(kv: Any, key: str, record: dict[str, Any], window_s: float) -> dict[str, Any] | None:
    """None when `key` is ours now (new, or its previous claim is outside the window or abandoned);
    else the record of the delivery that holds it, once that one has answered."""
    waited_until = time.monotonic() + PENDING_WAIT_S
    while True:
        try:
            await kv.create(key, orjson.dumps(record))
            return None
        except nats.js.errors.KeyWrongLastSequenceError:
            pass
        try:
            entry = await kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            continue  # the holder gave up (its submit failed) a moment ago: try again
        previous: dict[str, Any] = orjson.loads(entry.value or b"{}")  # a claim record, as written below
        age = time.time() - float(previous.get("at", 0))
        answered = "body" in previous
        if (answered and age > window_s) or (not answered and age > ABANDONED_AFTER_S):
            taken = {**record, "job_id": record["job_id"] if answered else previous.get("job_id", record["job_id"])}
            try:
                await kv.update(key, orjson.dumps(taken), last=entry.revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                continue
            record["job_id"] = taken["job_id"]
            return None
        if answered:
            return previous
        if time.monotonic() > waited_until:
            raise errors.Conflict("the same webhook delivery is still being accepted; retry shortly")
        await asyncio.sleep(POLL_S)


async def accept_once(kv: Any, hook: hooks_mod.Webhook, keys: list[str], submit: Submit) -> Answer:
    """Run `submit(job_id)` at most once per delivery within the window; answer with its response."""
    if hook.dedupe_window_s <= 0:
        return Answer(await submit(envelope.new_id()), duplicate=False)
    record: dict[str, Any] = {"job_id": envelope.new_id(), "at": time.time()}
    claimed: list[str] = []
    for key in (kv_key(hook, k) for k in keys):
        previous = await _claim(kv, key, record, hook.dedupe_window_s)
        if previous is not None:
            for mine in claimed:  # later replays of this request map to the first delivery too
                await kv.put(mine, orjson.dumps(previous))
            return Answer(previous["body"], duplicate=True)
        claimed.append(key)
    try:
        body = await submit(record["job_id"])
    except BaseException:
        for mine in claimed:
            await kv.delete(mine)
        raise
    done = orjson.dumps({**record, "body": body})
    for mine in claimed:
        await kv.put(mine, done)
    return Answer(body, duplicate=False)

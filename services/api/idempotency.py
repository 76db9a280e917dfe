"""`Idempotency-Key` for every POST that creates work: the same key (per token) within the
dedupe TTL returns the first response and creates nothing new.

The key is claimed in the `dedupe` KV bucket *before* any work is created, together with
the job id the work will get. A request that crashed halfway leaves a pending claim; a retry
after `ABANDONED_AFTER_S` takes it over and re-submits with the same job id, which the
deterministic command id turns into a no-op if the first submit did get through. A request that
failed with an unknown outcome (the bus went away mid-submit) keeps its claim too, released for
an immediate takeover, so its retry never becomes a second job.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import nats.js.errors
import orjson
from aiohttp import web

from services.api import state
from services.core import config as config_mod
from services.core import envelope, errors, subjects

HEADER = "Idempotency-Key"
ABANDONED_AFTER_S = 30.0
MAX_KEY_LENGTH = 255

Create = Callable[[str], Awaitable[tuple[int, dict[str, Any]]]]


async def _release_for_retry(kv: Any, kv_key: str, record: dict[str, Any]) -> None:
    """Keep the claim (and its job id) but let the next retry take it over without waiting."""
    with contextlib.suppress(Exception):
        await kv.put(kv_key, orjson.dumps({**record, "at": 0}))


def _fingerprint(request: web.Request, body: bytes) -> str:
    return hashlib.sha256(request.method.encode() + b" " + request.path.encode() + b"\n" + body).hexdigest()


def _kv_key(principal: config_mod.Token, key: str) -> str:
    digest = hashlib.sha256(principal.token.encode() + b"\x00" + key.encode()).hexdigest()
    return f"idem.{digest}"


async def respond(request: web.Request, principal: config_mod.Token, create: Create) -> web.Response:
    """Run `create(job_id)` at most once per (token, Idempotency-Key); answer with its response."""
    key = request.headers.get(HEADER)
    if key is None:
        status, body = await create(envelope.new_id())
        return web.json_response(body, status=status, dumps=state.dumps)
    if not key.strip() or len(key) > MAX_KEY_LENGTH:
        raise errors.BadRequest(f"{HEADER} must be 1 to {MAX_KEY_LENGTH} characters")
    st = state.of(request)
    kv = await st.bus.kv(subjects.KV_DEDUPE)
    kv_key = _kv_key(principal, key)
    fingerprint = _fingerprint(request, await request.read())
    record: dict[str, Any] = {"fp": fingerprint, "job_id": envelope.new_id(), "at": time.time()}
    try:
        await kv.create(kv_key, orjson.dumps(record))
    except nats.js.errors.KeyWrongLastSequenceError:
        entry = await kv.get(kv_key)
        previous = orjson.loads(entry.value or b"{}")
        if previous.get("fp") != fingerprint:
            raise errors.Conflict(f"{HEADER} {key!r} was already used for a different request") from None
        if "status" in previous:
            return web.json_response(
                previous["body"], status=previous["status"], dumps=state.dumps, headers={"Idempotent-Replayed": "true"}
            )
        if time.time() - float(previous.get("at", 0)) < ABANDONED_AFTER_S:
            raise errors.Conflict(f"a request with {HEADER} {key!r} is still in progress") from None
        record = {**previous, "at": time.time()}
        try:
            await kv.update(kv_key, orjson.dumps(record), last=entry.revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            raise errors.Conflict(f"a request with {HEADER} {key!r} is still in progress") from None
    try:
        status, body = await create(record["job_id"])
    except errors.ApiError as exc:
        if exc.status >= 500:
            await _release_for_retry(kv, kv_key, record)
        else:  # refused before any work was created: the key is free again
            with contextlib.suppress(Exception):
                await kv.delete(kv_key)
        raise
    except BaseException:
        # the outcome is unknown (e.g. the bus went away after storing the submit but before its ack): a retry
        # must take the claim over at once and submit under the SAME job id, which the deterministic command id
        # makes a no-op if the first submit got through. Deleting the claim here made the retry a second job.
        await _release_for_retry(kv, kv_key, record)
        raise
    await kv.put(kv_key, orjson.dumps({**record, "status": status, "body": body}))
    return web.json_response(body, status=status, dumps=state.dumps)

"""Webhooks: `POST <path>` of each configured `webhooks[i]` (no bearer token: the signature is
the authentication).

    valid HMAC-SHA256 of the raw body in `signature_header` (`sha256=<hex>` or bare hex)
        → 202 {"job_id"}: a job for the webhook's plugin and command (default `handle`) with
          event {type: "webhook.<name>" (or webhook.<name>.<event_header value>), payload: the
          JSON body, or {"raw": text} when it is not a JSON object}
    missing or wrong signature, or a signed timestamp outside `tolerance` → 403
    body over `max_body_size` (default 1 MiB) → 413        unknown path → 404
    a body that is an event envelope ({"type", "payload"}) is taken as the event, as in Ductile
    a replay (same body digest or delivery id within `dedupe_window`) → the first delivery's
        response with "duplicate": true and no new job (services/api/webhook_replays.py)

The secret is resolved at config load (`Config.webhook_secrets`); comparison is constant time.
Routes are registered at app creation from the config; each request looks its webhook up in
the config in force (so a reload changes secrets, plugins and commands of existing paths).
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from services.api import bodies, state, submit, webhook_replays
from services.core import errors, logging, subjects
from services.core import webhooks as hooks_mod

log = logging.get("api.webhooks")

#: a webhook's jobs are submitted by `webhook:<path>`, as in Ductile
SUBMITTED_BY = "webhook"


def _find(st: state.ApiState, path: str) -> hooks_mod.Webhook | None:
    for hook in hooks_mod.parse_all(st.config.webhooks):
        if hook.path == path:
            return hook
    return None


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The raw body, refusing (413) anything over `limit` bytes without reading it all."""
    if request.content_length is not None and request.content_length > limit:
        raise errors.PayloadTooLarge(f"webhook body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise errors.PayloadTooLarge(f"webhook body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def payload_of(body: bytes) -> dict[str, Any]:
    try:
        parsed = orjson.loads(body) if body.strip() else {}
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        bodies.check_value(body, parsed)
        return parsed
    return {"raw": body.decode("utf-8", "replace")}


def event_of(payload: dict[str, Any], event_type: str) -> dict[str, Any]:
    """The job's event. As in Ductile's dispatcher, a body that is itself an event envelope (a string
    `type` and/or an object `payload`) is taken as one; any other object is the event's payload."""
    kind, inner = payload.get("type"), payload.get("payload")
    if ("type" in payload or "payload" in payload) and isinstance(kind, str | None) and isinstance(inner, dict | None):
        return {"type": kind or event_type, "payload": inner or {}}
    return {"type": event_type, "payload": payload}


async def receive(request: web.Request) -> web.Response:
    st = state.of(request)
    hook = _find(st, request.path)
    if hook is None:  # removed by a reload
        raise errors.NotFound(f"no route for {request.method} {request.path}")
    body = await _read_body(request, hook.max_body_bytes)
    secret = st.config.webhook_secrets.get(hook.name)
    try:
        if secret is None:
            raise hooks_mod.Refused(f"invalid or missing signature in {hook.signature_header}")
        timestamp = hooks_mod.verify(hook, secret, body, request.headers, now=time.time())
    except hooks_mod.Refused as exc:
        log.warning(
            "webhook_refused",
            webhook=hook.name,
            header=hook.signature_header,
            present=hook.signature_header in request.headers,
            reason=str(exc),
        )
        raise errors.Forbidden(str(exc)) from None
    payload = payload_of(body)
    event_type = hook.event_type(request.headers.get(hook.event_header) if hook.event_header else None)
    event = event_of(payload, event_type)
    event_type = event["type"]

    async def create(job_id: str) -> dict[str, Any]:
        await submit.submit_job(
            st,
            plugin=hook.plugin,
            command=hook.command,
            payload=payload,
            submitted_by=f"{SUBMITTED_BY}:{hook.path}",
            event=event,
            job_id=job_id,
        )
        return {
            "job_id": job_id,
            "status": "queued",
            "plugin": hook.plugin,
            "command": hook.command,
            "event_type": event_type,
        }

    keys = hooks_mod.dedupe_keys(hook, body, request.headers, timestamp=timestamp)
    answer = await webhook_replays.accept_once(await st.bus.kv(subjects.KV_DEDUPE), hook, keys, create)
    if answer.duplicate:
        log.info("webhook_replay_answered", webhook=hook.name, job_id=answer.body.get("job_id"))
    else:
        log.info("webhook_accepted", webhook=hook.name, job_id=answer.body["job_id"], event_type=event_type)
    headers = {"Idempotent-Replayed": "true"} if answer.duplicate else None
    return web.json_response(
        {**answer.body, "duplicate": answer.duplicate}, status=202, headers=headers, dumps=state.dumps
    )


def add_routes(app: web.Application, config: Any) -> None:
    """A POST route per configured webhook path (call from create_app, after the API's own routes)."""
    for hook in hooks_mod.parse_all(config.webhooks):
        app.router.add_post(hook.path, receive)


def listener_app(api_app: web.Application, config: Any, middlewares: list[Any]) -> web.Application:
    """Ductile's `webhooks.listen` server: the webhook paths only (nothing else, no /healthz), sharing
    the API's state, so a reload changes its secrets, plugins and commands too."""
    app = web.Application(middlewares=middlewares)
    app[state.STATE] = api_app[state.STATE]
    add_routes(app, config)
    return app

"""Relay ingress, as Ductile's `relay.Receiver` (shared/spec/ductile-conformance.md §2.21):
`POST <remote_ingress.listen_path>/<peer>` with no bearer token — the peer's HMAC signature is the
authentication. Checks in Ductile's order, each refusal in Ductile's words:

    unknown peer / X-Ductile-Peer ≠ <peer>                  403 unknown relay peer / peer identity mismatch
    X-Ductile-Timestamp missing, bad, outside the skew      403 missing / invalid relay timestamp / …skew
    X-Ductile-Key-Id missing (require_key_id) or ≠ key_id   403 missing relay key id / relay key id mismatch
    X-Ductile-Signature missing / wrong                     403 missing relay signature / forbidden
    body over max_body_size                                 413 relay payload too large
    envelope invalid                                        400 <why>
    origin.instance ≠ <peer>                                403 origin instance mismatch
    event type not in the peer's `accept`                   422 event type not allowed for peer

An accepted event goes where events from outside go: `ingest.<type>` (the dispatcher starts every
pipeline whose `on` is the type). Its dedupe key is the envelope's, else
`relay:<peer>:<origin.instance>:<origin.event_id>`; the same key is the NATS message id, so a
replayed envelope is one ingest. 202 `{"status": "accepted", "peer", "event_type", "receiver_event_id"}`.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from aiohttp import web

from services.api import state
from services.core import errors, logging, schemas, subjects, values
from services.core import relay as relay_mod

log = logging.get("api.relay")


def _refuse(status: int, message: str) -> web.Response:
    return web.json_response({"error": message, "code": "relay_refused"}, status=status, dumps=state.dumps)


def validate_envelope(body: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """(envelope, None), or (None, Ductile-style reason)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, "invalid relay envelope: body is not JSON"
    if not isinstance(doc, dict):
        return None, "invalid relay envelope: body must be an object"
    problem = values.problem_in_json(body, doc)
    if problem is not None:
        return None, f"invalid relay envelope: {problem}"
    event, origin = doc.get("event"), doc.get("origin")
    if not isinstance(event, dict) or not isinstance(event.get("type"), str) or not event["type"].strip():
        return None, "event.type is required"
    if not isinstance(event.get("payload", {}), dict):
        return None, "event.payload must be an object"
    if origin is not None and not isinstance(origin, dict):
        return None, "origin must be an object"
    if schemas.violations("ingest-event", {"type": event["type"], "payload": event.get("payload") or {}}):
        return None, f"event.type {event['type']!r} is not a dotted event type"
    return doc, None


async def receive(request: web.Request) -> web.Response:
    st = state.of(request)
    ingress = st.config.remote_ingress
    name = request.match_info.get("peer", "").strip()
    peer = ingress.peers.get(name) if ingress is not None else None
    if ingress is None or peer is None:
        return _refuse(403, "unknown relay peer")
    if request.headers.get(relay_mod.HEADER_PEER, "").strip() != name:
        return _refuse(403, "peer identity mismatch")
    stamp = request.headers.get(relay_mod.HEADER_TIMESTAMP, "").strip()
    if not stamp:
        return _refuse(403, "missing relay timestamp")
    moment = relay_mod.parse_timestamp(stamp)
    if moment is None:
        return _refuse(403, "invalid relay timestamp")
    if abs(time.time() - moment.timestamp()) > ingress.skew_s:
        return _refuse(403, "relay timestamp outside allowed clock skew")
    key_id = request.headers.get(relay_mod.HEADER_KEY_ID, "").strip()
    if ingress.require_key_id and not key_id:
        return _refuse(403, "missing relay key id")
    if peer.key_id and key_id != peer.key_id:
        return _refuse(403, "relay key id mismatch")
    signature = request.headers.get(relay_mod.HEADER_SIGNATURE, "").strip()
    if not signature:
        return _refuse(403, "missing relay signature")
    body = await _read(request, ingress.max_body_bytes)
    if not relay_mod.verify(request.method, request.path, stamp, body, signature, peer.secret):
        log.warning("relay_refused", peer=name, reason="bad signature")
        return _refuse(403, "forbidden")
    doc, problem = validate_envelope(body)
    if doc is None:
        return _refuse(400, problem or "invalid relay envelope")
    event, origin = doc["event"], doc.get("origin") or {}
    instance = str(origin.get("instance") or "").strip()
    if instance and instance != name:
        return _refuse(403, "origin instance mismatch")
    if peer.accept and event["type"] not in peer.accept:
        return _refuse(422, "event type not allowed for peer")
    dedupe = str(event.get("dedupe_key") or "").strip()
    if not dedupe and str(origin.get("event_id") or "").strip():
        dedupe = f"relay:{name}:{instance}:{str(origin['event_id']).strip()}"
    receiver_event_id = str(uuid.uuid4())
    message: dict[str, Any] = {"type": event["type"], "payload": event.get("payload") or {}}
    if dedupe:
        message["dedupe_key"] = dedupe[:512]
    headers = {"Nats-Msg-Id": f"relay:{name}:{dedupe}" if dedupe else receiver_event_id}
    try:
        await st.bus.js.publish(
            subjects.ALL_INGEST.replace(">", event["type"]), orjson.dumps(message), headers=headers, timeout=10
        )
    except Exception as exc:  # the bus is down: Ductile's 500 text, logged with the cause
        log.warning("relay_enqueue_failed", peer=name, error=str(exc) or type(exc).__name__)
        raise errors.ServiceUnavailable("failed to enqueue relay event") from None
    log.info(
        "relay_accepted",
        peer=name,
        event_type=event["type"],
        receiver_event_id=receiver_event_id,
        origin_instance=instance or None,
        origin_event_id=origin.get("event_id"),
    )
    return web.json_response(
        {"status": "accepted", "peer": name, "event_type": event["type"], "receiver_event_id": receiver_event_id},
        status=202,
        dumps=state.dumps,
    )


async def _read(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise errors.PayloadTooLarge("relay payload too large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise errors.PayloadTooLarge("relay payload too large")
        chunks.append(chunk)
    return b"".join(chunks)


def add_routes(app: web.Application, config: Any) -> None:
    """`POST <listen_path>/{peer}` when `remote_ingress` is configured (a new path needs a restart)."""
    ingress = getattr(config, "remote_ingress", None)
    if ingress is not None:
        app.router.add_post(ingress.listen_path + "/{peer}", receive)

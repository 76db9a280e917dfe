"""Ductile's relay ingress (`remote_ingress`): the config of the peers that may send events here,
and the signature they sign with. Pure; the route is services/api/relay.py.

    remote_ingress:
      listen_path: /ingest/peer          POST <listen_path>/<peer>
      max_body_size: 1MB                 larger bodies → 413 (default 1 MiB)
      allowed_clock_skew: 5m             X-Ductile-Timestamp further from now → 403
      require_key_id: true               X-Ductile-Key-Id required
      peers:
        - {name: home-primary, enabled: true, secret_ref: relay-lab-v1, key_id: v1,
           accept: [backup.ready], baggage: {allow: [trace_id]}}

The signature (`X-Ductile-Signature`, hex, optionally `sha256=`) is the HMAC-SHA256, under the
peer's secret, of `METHOD \\n path \\n timestamp \\n body`, as Ductile's sender makes it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from services.core import durations
from services.core import webhooks as hooks_mod

HEADER_PEER = "X-Ductile-Peer"
HEADER_TIMESTAMP = "X-Ductile-Timestamp"
HEADER_KEY_ID = "X-Ductile-Key-Id"
HEADER_SIGNATURE = "X-Ductile-Signature"
DEFAULT_LISTEN_PATH = "/ingest/peer"
DEFAULT_SKEW_S = 300.0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Peer:
    name: str
    secret: str
    key_id: str = ""
    #: event types this peer may send (empty: any)
    accept: frozenset[str] = frozenset()
    #: baggage keys admitted from this peer (Ductile's baggage.allow)
    baggage_allow: frozenset[str] = frozenset()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Ingress:
    listen_path: str = DEFAULT_LISTEN_PATH
    max_body_bytes: int = hooks_mod.MAX_BODY_BYTES
    skew_s: float = DEFAULT_SKEW_S
    require_key_id: bool = False
    peers: Mapping[str, Peer] = dataclasses.field(default_factory=dict)


def parse(raw: Mapping[str, Any] | None, secrets: Mapping[str, Any], env: Mapping[str, str]) -> Ingress | None:
    """`remote_ingress` with each enabled peer's secret resolved (a `secrets:` entry, else the
    environment, as webhooks' `secret_ref`); None when it is not configured. ValueError names the peer."""
    if not raw:
        return None
    peers: dict[str, Peer] = {}
    for i, spec in enumerate(raw.get("peers") or []):
        where = f"remote_ingress.peers[{i}]"
        name = str(spec.get("name") or "").strip()
        if not name:
            raise ValueError(f"{where}: name is required")
        if not spec.get("enabled", False):
            continue  # Ductile: a peer is off unless enabled
        ref = str(spec.get("secret_ref") or "").strip()
        if not ref:
            raise ValueError(f"{where} ({name}): secret_ref is required")
        secret = secrets.get(ref) if isinstance(secrets.get(ref), str) else env.get(ref)
        if not secret:
            raise ValueError(f"{where} ({name}): secret_ref {ref!r} names no secrets: entry or environment variable")
        peers[name] = Peer(
            name=name,
            secret=str(secret),
            key_id=str(spec.get("key_id") or "").strip(),
            accept=frozenset(str(t) for t in spec.get("accept") or ()),
            baggage_allow=frozenset(str(k) for k in (spec.get("baggage") or {}).get("allow") or ()),
        )
    path = "/" + str(raw.get("listen_path") or DEFAULT_LISTEN_PATH).strip().strip("/")
    skew = raw.get("allowed_clock_skew")
    return Ingress(
        listen_path=path,
        max_body_bytes=hooks_mod.parse_size(raw.get("max_body_size"), where="remote_ingress.max_body_size"),
        skew_s=durations.parse_seconds(skew) if skew else DEFAULT_SKEW_S,
        require_key_id=bool(raw.get("require_key_id", False)),
        peers=peers,
    )


def sign(method: str, path: str, timestamp: str, body: bytes, secret: str) -> str:
    mac = hmac.new(secret.encode(), digestmod=hashlib.sha256)
    mac.update(method.strip().upper().encode() + b"\n" + path.encode() + b"\n" + timestamp.strip().encode() + b"\n")
    mac.update(body)
    return mac.hexdigest()


def verify(method: str, path: str, timestamp: str, body: bytes, signature: str, secret: str) -> bool:
    given = signature.strip().removeprefix("sha256=")
    try:
        actual = bytes.fromhex(given)
    except ValueError:
        return False
    return hmac.compare_digest(bytes.fromhex(sign(method, path, timestamp, body, secret)), actual)


def parse_timestamp(text: str) -> datetime | None:
    """RFC 3339 (fractions allowed) with a zone, in UTC; None when it is not one."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.tzinfo else None

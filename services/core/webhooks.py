"""Webhook specs: `webhooks[i]` of the config parsed into `Webhook`s, their secrets resolved, and
the HMAC-SHA256 signature check. Pure: the config loader hands in the environment and the
`secrets:` section; the API's routes (services/api/webhooks.py) do the HTTP.

A webhook's secret is never a YAML literal: `secret_ref` names a secret of Ductile's age vault
(services/core/vault.py), an entry of the top-level `secrets:` map (itself usually
`${ENV}`-substituted) or, failing both, an environment variable.

Replays: a `scheme` that signs a timestamp (`stripe`: `t=…,v1=…`; `slack`: `v0=` over
`v0:<ts>:<body>`; `hmac` with a `timestamp_header`: over `<ts>.<body>`) is refused outside
`tolerance`, and `dedupe_keys` names what identifies a delivery (its delivery id and its body
digest) for the API's dedupe window (services/api/webhook_replays.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from typing import Any

from services.core import durations

DEFAULT_COMMAND = "handle"
DEFAULT_SIGNATURE_HEADER = "X-Hub-Signature-256"
#: scheme → (signature header, timestamp header) when the webhook names none
SCHEME_HEADERS: dict[str, tuple[str, str | None]] = {
    "hmac": (DEFAULT_SIGNATURE_HEADER, None),
    "stripe": ("Stripe-Signature", None),  # the timestamp is inside the signature header
    "slack": ("X-Slack-Signature", "X-Slack-Request-Timestamp"),
}
DEFAULT_TOLERANCE_S = 300.0
DEFAULT_DELIVERY_HEADER = "X-GitHub-Delivery"
DEFAULT_DEDUPE_WINDOW_S = 86400.0
#: bodies over this are refused with 413 (Ductile's default `max_body_size`)
MAX_BODY_BYTES = 1024 * 1024
SIGNATURE_PREFIX = "sha256="
_SIZE = re.compile(r"^\s*(\d+)\s*([KMG]i?B?|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Webhook:
    name: str
    path: str
    plugin: str
    command: str = DEFAULT_COMMAND
    secret_ref: str
    signature_header: str = DEFAULT_SIGNATURE_HEADER
    #: a request header whose value names the event (e.g. X-GitHub-Event): type "webhook.<name>.<value>"
    event_header: str | None = None
    #: how the signature is made: "hmac" (of the body, or of `<ts>.<body>` with a timestamp_header),
    #: "stripe" or "slack"
    scheme: str = "hmac"
    #: the header with the signed unix timestamp (None: the scheme signs none, or carries it in the signature)
    timestamp_header: str | None = None
    #: a signed timestamp further than this from now is refused (a replay of an old request)
    tolerance_s: float = DEFAULT_TOLERANCE_S
    #: a header naming the delivery (a sender's redelivery repeats it); None to dedupe on the body only
    delivery_header: str | None = DEFAULT_DELIVERY_HEADER
    #: a delivery seen within this long is answered with its first job, not a new one; 0 = off
    dedupe_window_s: float = DEFAULT_DEDUPE_WINDOW_S
    #: Ductile's `max_body_size`: a larger body is refused with 413
    max_body_bytes: int = MAX_BODY_BYTES
    where: str = ""

    @property
    def timestamped(self) -> bool:
        return self.scheme in ("stripe", "slack") or self.timestamp_header is not None

    def event_type(self, header_value: str | None) -> str:
        value = (header_value or "").strip()
        if value and all(c.isalnum() or c in "_-." for c in value):
            return f"webhook.{self.name}.{value}"
        return f"webhook.{self.name}"


def parse_size(value: Any, *, where: str) -> int:
    """Ductile's `max_body_size`: a byte count, or text such as `512KB`, `1MB`, `2MiB` (powers of 1024);
    unset or 0 is the 1 MiB default."""
    if value is None or value == "" or value == 0:
        return MAX_BODY_BYTES
    if isinstance(value, bool):
        raise ValueError(f"{where}: must be a byte count or a size such as 1MB")
    match = _SIZE.match(str(value))
    if match is None:
        raise ValueError(f"{where}: must be a byte count or a size such as 1MB")
    size = int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "")[:1].lower()]
    return size if size > 0 else MAX_BODY_BYTES


def listen_address(value: Any) -> tuple[str, int] | None:
    """Ductile's `webhooks.listen` (`host:port`, `:port` = every interface) as (host, port); None when unset."""
    if not value:
        return None
    host, sep, port = str(value).strip().rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError("webhooks.listen: must be host:port (e.g. 127.0.0.1:8091)")
    return (host.strip("[]") or "0.0.0.0"), int(port)


def parse_all(raw: Sequence[Mapping[str, Any]]) -> tuple[Webhook, ...]:
    """Every configured webhook; ValueError naming `webhooks[i]` on a duplicate name or path."""
    out: list[Webhook] = []
    names: set[str] = set()
    paths: set[str] = set()
    for i, spec in enumerate(raw):
        where = f"webhooks[{i}] ({spec.get('name')})"
        scheme = str(spec.get("scheme") or "hmac")
        if scheme not in SCHEME_HEADERS:
            raise ValueError(f"{where}: scheme must be one of {', '.join(SCHEME_HEADERS)}")
        signature_default, timestamp_default = SCHEME_HEADERS[scheme]
        delivery = spec.get("delivery_header", DEFAULT_DELIVERY_HEADER)
        hook = Webhook(
            name=str(spec["name"]),
            path=str(spec["path"]),
            plugin=str(spec["plugin"]),
            command=str(spec.get("command") or DEFAULT_COMMAND),
            secret_ref=str(spec.get("secret_ref") or ""),
            signature_header=str(spec.get("signature_header") or signature_default),
            event_header=str(spec["event_header"]) if spec.get("event_header") else None,
            scheme=scheme,
            timestamp_header=str(spec.get("timestamp_header") or timestamp_default or "") or None,
            tolerance_s=durations.parse_seconds(spec.get("tolerance", DEFAULT_TOLERANCE_S)),
            delivery_header=str(delivery) if delivery else None,
            dedupe_window_s=durations.parse_seconds(spec.get("dedupe_window", DEFAULT_DEDUPE_WINDOW_S)),
            max_body_bytes=parse_size(spec.get("max_body_size"), where=f"{where}.max_body_size"),
            where=where,
        )
        if scheme == "stripe" and hook.timestamp_header:
            raise ValueError(
                f"{where}: scheme stripe carries its timestamp in the signature header "
                "(timestamp_header does not apply)"
            )
        if hook.name in names:
            raise ValueError(f"{where}: duplicate webhook name {hook.name!r}")
        if hook.path in paths:
            raise ValueError(f"{where}: duplicate webhook path {hook.path!r}")
        names.add(hook.name)
        paths.add(hook.path)
        out.append(hook)
    return tuple(out)


def resolve_secrets(hooks: Sequence[Webhook], secrets: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    """name → secret, from `secrets` (the vault's projection over the `secrets:` section) first, then the
    environment; ValueError naming the webhook."""
    out: dict[str, str] = {}
    for hook in hooks:
        if not hook.secret_ref:
            raise ValueError(
                f"{hook.where}: secret_ref is required (the name of a secrets: entry or an "
                "environment variable holding the HMAC secret)"
            )
        value = secrets.get(hook.secret_ref)
        if value is None:
            value = env.get(hook.secret_ref)
        if value is None or not str(value):
            raise ValueError(
                f"{hook.where}: secret_ref {hook.secret_ref!r} resolves to nothing: neither an "
                "active secret of the vault, a secrets: entry nor an environment variable of that "
                "name is set"
            )
        out[hook.name] = str(value)
    return out


def check_plugins(hooks: Sequence[Webhook], commands_of: Mapping[str, Any]) -> None:
    """ValueError when a webhook names a plugin (found on disk) without its command, or no known plugin."""
    for hook in hooks:
        commands = commands_of.get(hook.plugin)
        if commands is None:
            raise ValueError(f"{hook.where}: unknown plugin {hook.plugin!r}")
        if hook.command not in commands:
            raise ValueError(f"{hook.where}: plugin {hook.plugin!r} has no command {hook.command!r}")


def signature_valid(secret: str, body: bytes, presented: str | None) -> bool:
    """HMAC-SHA256 of `body` under `secret`, given as `sha256=<hex>` (GitHub) or bare hex; constant time."""
    if not presented:
        return False
    given = presented.strip()
    if given.lower().startswith(SIGNATURE_PREFIX):
        given = given[len(SIGNATURE_PREFIX) :]
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), given.lower().encode("ascii", "replace"))


def sign(secret: str, body: bytes) -> str:
    """`sha256=<hex>`: what a sender puts in the signature header."""
    return SIGNATURE_PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Refused(ValueError):
    """The request is not an authentic, fresh delivery of this webhook (the message says why)."""


def _hex(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _same(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.strip().lower().encode("ascii", "replace"))


def _timestamp(raw: str | None, what: str) -> int:
    if raw is None or not raw.strip():
        raise Refused(f"missing signed timestamp ({what})")
    try:
        return int(raw.strip())
    except ValueError:
        raise Refused(f"the signed timestamp ({what}) is not a unix time in seconds") from None


def verify(hook: Webhook, secret: str, body: bytes, headers: Mapping[str, str], *, now: float) -> int | None:
    """Check a delivery's signature and, where the scheme signs one, its timestamp's freshness.
    Returns the signed timestamp (None when the scheme has none); raises Refused naming the problem."""
    presented = headers.get(hook.signature_header)
    if not presented:
        raise Refused(f"invalid or missing signature in {hook.signature_header}")
    ts: int | None = None
    if hook.scheme == "stripe":
        parts = [p.partition("=") for p in presented.split(",")]
        ts = _timestamp(next((v for k, _, v in parts if k.strip() == "t"), None), f"t= in {hook.signature_header}")
        expected = _hex(secret, str(ts).encode() + b"." + body)
        valid = any(k.strip() == "v1" and _same(expected, v) for k, _, v in parts)
    elif hook.scheme == "slack":
        assert hook.timestamp_header is not None
        ts = _timestamp(headers.get(hook.timestamp_header), hook.timestamp_header)
        expected = _hex(secret, b"v0:" + str(ts).encode() + b":" + body)
        given = presented.strip()
        valid = given.lower().startswith("v0=") and _same(expected, given[3:])
    elif hook.timestamp_header is not None:
        ts = _timestamp(headers.get(hook.timestamp_header), hook.timestamp_header)
        valid = signature_valid(secret, str(ts).encode() + b"." + body, presented)
    else:
        valid = signature_valid(secret, body, presented)
    if not valid:
        raise Refused(f"invalid or missing signature in {hook.signature_header}")
    if ts is not None and abs(now - ts) > hook.tolerance_s:
        raise Refused(
            f"the signed timestamp is {int(now - ts)}s from now, outside the tolerance of "
            f"{hook.tolerance_s:g}s (a replayed or delayed request)"
        )
    return ts


def dedupe_keys(hook: Webhook, body: bytes, headers: Mapping[str, str], *, timestamp: int | None) -> list[str]:
    """What identifies this delivery: its body digest (with the signed timestamp, when there is one: the
    sender's own resend at another time is new, a replay is not) and its delivery id, when it names one.
    The body digest is always a key: a delivery id is not signed, so a replayer could change it."""
    signed = (f"{timestamp}." if timestamp is not None else "").encode() + body
    keys = [f"body:{hashlib.sha256(signed).hexdigest()}"]
    delivery = headers.get(hook.delivery_header) if hook.delivery_header else None
    if delivery and delivery.strip():
        keys.append(f"delivery:{delivery.strip()}")
    return keys

"""Webhook specs: `webhooks[i]` of the config parsed into `Webhook`s, their secrets resolved, and
the HMAC-SHA256 signature check. Pure: the config loader hands in the environment and the
`secrets:` section; the API's routes (services/api/webhooks.py) do the HTTP.

A webhook's secret is never a YAML literal: `secret_ref` names an entry of the top-level
`secrets:` map (itself usually `${ENV}`-substituted) or, failing that, an environment variable.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any

DEFAULT_COMMAND = "handle"
DEFAULT_SIGNATURE_HEADER = "X-Hub-Signature-256"
#: bodies over this are refused with 413
MAX_BODY_BYTES = 1024 * 1024
SIGNATURE_PREFIX = "sha256="


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
    where: str = ""

    def event_type(self, header_value: str | None) -> str:
        value = (header_value or "").strip()
        if value and all(c.isalnum() or c in "_-." for c in value):
            return f"webhook.{self.name}.{value}"
        return f"webhook.{self.name}"


def parse_all(raw: Sequence[Mapping[str, Any]]) -> tuple[Webhook, ...]:
    """Every configured webhook; ValueError naming `webhooks[i]` on a duplicate name or path."""
    out: list[Webhook] = []
    names: set[str] = set()
    paths: set[str] = set()
    for i, spec in enumerate(raw):
        where = f"webhooks[{i}] ({spec.get('name')})"
        hook = Webhook(
            name=str(spec["name"]), path=str(spec["path"]), plugin=str(spec["plugin"]),
            command=str(spec.get("command") or DEFAULT_COMMAND), secret_ref=str(spec.get("secret_ref") or ""),
            signature_header=str(spec.get("signature_header") or DEFAULT_SIGNATURE_HEADER),
            event_header=str(spec["event_header"]) if spec.get("event_header") else None, where=where,
        )
        if hook.name in names:
            raise ValueError(f"{where}: duplicate webhook name {hook.name!r}")
        if hook.path in paths:
            raise ValueError(f"{where}: duplicate webhook path {hook.path!r}")
        names.add(hook.name)
        paths.add(hook.path)
        out.append(hook)
    return tuple(out)


def resolve_secrets(hooks: Sequence[Webhook], secrets: Mapping[str, Any],
                    env: Mapping[str, str]) -> dict[str, str]:
    """name → secret, from the `secrets:` section first, then the environment; ValueError naming the webhook."""
    out: dict[str, str] = {}
    for hook in hooks:
        if not hook.secret_ref:
            raise ValueError(f"{hook.where}: secret_ref is required (the name of a secrets: entry or an "
                             "environment variable holding the HMAC secret)")
        value = secrets.get(hook.secret_ref)
        if value is None:
            value = env.get(hook.secret_ref)
        if value is None or not str(value):
            raise ValueError(f"{hook.where}: secret_ref {hook.secret_ref!r} resolves to nothing: neither a "
                             "secrets: entry nor an environment variable of that name is set")
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
        given = given[len(SIGNATURE_PREFIX):]
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), given.lower().encode("ascii", "replace"))


def sign(secret: str, body: bytes) -> str:
    """`sha256=<hex>`: what a sender puts in the signature header."""
    return SIGNATURE_PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()

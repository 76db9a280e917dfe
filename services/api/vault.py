"""Ductile's vault management routes (`internal/api/vault.go`, `server.go` `mountVaultRoutes`): seven
POSTs that change the vault file, mounted only when the config loaded a vault (otherwise the paths are
unknown: 404).

Authentication is the vault admin token (the vault's active `core-admin-token`) as
`Authorization: Bearer <token>`, header only; API tokens are not accepted. Errors are Ductile's:
401 with the bearer-extraction text or `invalid vault admin token`, 400 `invalid JSON body`, 400 with
the vault's own text for a refused operation. Replies never hold a value.

Each success publishes `evt.system.vault_changed` (Ductile appends a vault-audit row): op, the secret
or principal, actor `core-admin-token`, outcome `ok`, a detail; never a value. Like Ductile's audit
it is best effort: the vault file is already written when it is published, so a bus failure is logged
and the reply is still 200.

Other processes: the runner re-reads the vault file before each job that composes vault secrets (a
rolled plugin secret reaches the next job); `secret_ref`s (API tokens, webhook secrets) are resolved
at config load, so a rolled one takes effect at the next `POST /system/reload`, as in Ductile.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from services.api import state
from services.core import config as config_mod
from services.core import envelope, errors, logging, subjects
from services.core import vault as vault_mod

log = logging.get("api.vault")

EVENT_TYPE = "system.vault_changed"
ACTOR = "core-admin-token"

Handler = Callable[[vault_mod.Vault, dict[str, Any]], tuple[dict[str, Any], dict[str, Any]]]


def _reply(status: int, body: dict[str, Any]) -> web.Response:
    return web.json_response(body, status=status, dumps=state.dumps)


def _bearer(request: web.Request) -> str | web.Response:
    """Ductile's `ExtractBearerToken(r, false)`: the header only, `Bearer ` exactly."""
    header = request.headers.get("Authorization")
    if header is None or header == "":
        return _reply(401, {"error": "missing or invalid Authorization header"})
    if not header.startswith("Bearer "):
        return _reply(401, {"error": "invalid Authorization header format"})
    token = header.removeprefix("Bearer ").strip()
    if not token:
        return _reply(401, {"error": "missing or invalid Authorization header"})
    return token


#: field → the JSON types Go's decoder accepts for it (None: null leaves the Go zero value)
_FIELDS: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "kind": (str,),
    "value": (str,),
    "pattern": (str,),
    "authorized_principals": (list,),
}


async def _body(request: web.Request) -> dict[str, Any] | None:
    """The body as Go's `json.NewDecoder(r.Body).Decode(&req)` reads it: the first JSON value, which
    must be an object (or null); unknown keys ignored; a known key of the wrong type is an error."""
    raw = await request.read()
    try:
        text = raw.decode()
        value, _ = json.JSONDecoder().raw_decode(text.lstrip())
    except (UnicodeDecodeError, ValueError):
        return None
    if value is None:
        return {}
    if not isinstance(value, dict):
        return None
    out: dict[str, Any] = {}
    for key, types in _FIELDS.items():
        if key not in value or value[key] is None:
            continue
        if not isinstance(value[key], types):
            return None
        if key == "authorized_principals" and not all(isinstance(p, str) for p in value[key]):
            return None
        out[key] = value[key]
    return out


def _principal(v: vault_mod.Vault, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    name, kind = body.get("name", ""), body.get("kind", "")
    v.register_principal(name, kind)
    return (
        {"name": name, "status": "principal_registered"},
        {"op": "register", "principal": name, "detail": f"kind={kind}"},
    )


def _secret(v: vault_mod.Vault, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    name = body.get("name", "")
    # vault.go handleVaultSet defaults the pattern to manual before SetSecret, on create and update alike
    pattern = body.get("pattern") or vault_mod.MANUAL
    v.set_secret(name, body.get("value", ""), body.get("authorized_principals"), pattern)
    return {"name": name, "status": "set"}, {"op": "set", "secret_name": name, "detail": f"pattern={pattern}"}


def _roll(v: vault_mod.Vault, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    name = body.get("name", "")
    v.roll(name, body.get("value", ""))
    return {"name": name, "status": "rolled"}, {"op": "roll", "secret_name": name}


def _revoke(v: vault_mod.Vault, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    name = body.get("name", "")
    v.revoke(name)
    return {"name": name, "status": "revoked"}, {"op": "revoke", "secret_name": name}


def _revoke_principal(v: vault_mod.Vault, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    name = body.get("name", "")
    v.revoke_principal(name)
    return {"name": name, "status": "principal_revoked"}, {"op": "revoke_principal", "principal": name}


def _purge_principal(v: vault_mod.Vault, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    name = body.get("name", "")
    v.purge_principal(name)
    return {"name": name, "status": "principal_purged"}, {"op": "purge_principal", "principal": name}


def _roll_principal(v: vault_mod.Vault, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    name = body.get("name", "")
    rolled, skipped = v.roll_principal(name)
    # Go encodes an empty (nil) slice as null
    return (
        {"name": name, "rolled": rolled or None, "skipped": skipped or None},
        {"op": "roll_principal", "principal": name, "detail": f"rolled={len(rolled)} skipped={len(skipped)}"},
    )


ROUTES: dict[str, Handler] = {
    "/vault/principal": _principal,
    "/vault/secret": _secret,
    "/vault/secret/roll": _roll,
    "/vault/secret/revoke": _revoke,
    "/vault/principal/revoke": _revoke_principal,
    "/vault/principal/purge": _purge_principal,
    "/vault/principal/roll": _roll_principal,
}


def audit_event(fact: dict[str, Any], vault: vault_mod.Vault, *, source: str) -> tuple[str, envelope.Envelope]:
    data = {**fact, "actor": ACTOR, "outcome": "ok", "vault_file": str(vault.path)}
    return subjects.system_event("vault_changed"), envelope.make(EVENT_TYPE, source=source, data=data)


def _handler(operation: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        st = state.of(request)
        vault: vault_mod.Vault | None = st.config.vault
        if vault is None:  # a reload dropped the vault: the routes are gone
            raise errors.NotFound(f"no route for {request.method} {request.path}")
        token = _bearer(request)
        if isinstance(token, web.Response):
            return token
        vault.refresh()  # another process may have rotated the admin token
        if not vault.authenticate_admin(token):
            return _reply(401, {"error": "invalid vault admin token"})
        body = await _body(request)
        if body is None:
            return _reply(400, {"error": "invalid JSON body"})
        try:
            reply, fact = await asyncio.to_thread(operation, vault, body)  # file lock, encryption, fsync
        except vault_mod.VaultError as exc:
            return _reply(400, {"error": str(exc)})
        except (OSError, vault_mod.VaultFileError) as exc:  # the file could not be written: nothing changed
            log.error("vault_write_failed", path=str(vault.path), error=str(exc))
            return _reply(500, {"error": "vault write failed"})
        try:
            await st.bus.publish(*audit_event(fact, vault, source=st.source))
        except Exception as exc:  # best effort, as Ductile's audit row: the file is already written
            log.error("vault_audit_unpublished", op=fact["op"], error=str(exc) or type(exc).__name__)
        log.info("vault_changed", op=fact["op"], secret=fact.get("secret_name"), principal=fact.get("principal"))
        return _reply(200, reply)

    return handle


def add_routes(app: web.Application, config: config_mod.Config) -> None:
    """The seven routes, when `config` loaded a vault (call from create_app)."""
    if config.vault is None:
        return
    for path, operation in ROUTES.items():
        app.router.add_post(path, _handler(operation))

"""Bearer-token authentication and scope checks.

Tokens come from `api.auth.tokens` (plus the Laddr key, `api.laddr`: services/core/config.py);
on Laddr's paths (`/api/*`, `/ws/*`) an `X-API-Key` header is a token too, and wins over
`Authorization` when it holds a value. Comparison is constant time over every configured
token. What a scope implies (Ductile's rules: `plugin:rw` ⇒ `plugin:ro` ⇒ `plugin:catalog:ro`, ...;
`*` implies everything) is decided in one place, services/core/scopes.py `implied`.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from aiohttp import web

from services.api import laddr_dialect, state
from services.core import catalog as catalog_mod
from services.core import config as config_mod
from services.core import errors, scopes

SCOPES = frozenset(scopes.SCOPES)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()  # header bytes that are not UTF-8


class TokenTable:
    def __init__(self, tokens: tuple[config_mod.Token, ...]) -> None:
        self.replace(tokens)

    def replace(self, tokens: tuple[config_mod.Token, ...]) -> None:
        """Serve these tokens from now on (config reload)."""
        self._entries = [(_digest(t.token), t) for t in tokens]

    def find(self, presented: str) -> config_mod.Token | None:
        digest = _digest(presented)
        found = None
        for known, token in self._entries:
            if hmac.compare_digest(known, digest):
                found = token
        return found


def grants(held: frozenset[str], needed: str) -> bool:
    return scopes.grants(held, needed)


#: Laddr's key header; on Laddr's paths, when it holds a value, only that value counts (a wrong
#: X-API-Key next to a right Bearer token is refused, as Laddr 0.9.6 `verify_api_key` does)
API_KEY_HEADER = "X-API-Key"


def presented_token(request: web.Request, *, allow_query: bool = False) -> str | None:
    if laddr_dialect.applies(request.path):
        key = request.headers.get(API_KEY_HEADER, "").strip()
        if key:
            return key
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if allow_query and request.query.get("token"):
        return request.query["token"]
    return None


#: the token value standing for "no credentials" under `api.laddr.auth: none` (no header can carry it)
OPEN_PRINCIPAL = "\x00laddr-open"

TABLE = web.AppKey("headrace_tokens", TokenTable)


def authenticate(request: web.Request, *, allow_query: bool = False) -> config_mod.Token:
    """The token's principal, or 401."""
    table = request.app[TABLE]
    token = presented_token(request, allow_query=allow_query)
    laddr = laddr_dialect.applies(request.path)
    if token is None and laddr:
        settings = state.of(request).config.api.laddr
        if settings.open:  # `api.laddr.auth: none`, an explicit opt-in (logged at start)
            return config_mod.Token(token=OPEN_PRINCIPAL, scopes=settings.scopes, name="laddr-open")
    if token is None:
        raise errors.Unauthorized(
            "missing API key (X-API-Key: <key> or Authorization: Bearer <key>)"
            if laddr
            else "missing bearer token (Authorization: Bearer <token>)"
        )
    principal = table.find(token)
    if principal is None:
        raise errors.Unauthorized("invalid API key" if laddr else "invalid bearer token")
    return principal


def require(
    request: web.Request, *any_of: str, allow_query: bool = False, narrow: tuple[str, ...] = ()
) -> config_mod.Token:
    """Authenticate (401) and check that the principal holds one of `any_of` or of Ductile's `narrow`
    scopes for the route (403, naming the documented `any_of`)."""
    principal = authenticate(request, allow_query=allow_query)
    check(principal, *any_of, narrow=narrow)
    return principal


def check(principal: config_mod.Token, *any_of: str, narrow: tuple[str, ...] = ()) -> None:
    """403 unless the principal holds one of `any_of` (or of `narrow`)."""
    if not any(grants(principal.scopes, scope) for scope in (*any_of, *narrow)):
        raise errors.Forbidden(
            f"this token lacks the scope for this action (needs {' or '.join(any_of)})", required_scopes=list(any_of)
        )


#: who may see what jobs produced (`result`, `last_error`, `stderr`, plugin logs, stopwatch sub-timings):
#: Ductile's canSeeJobResults (jobs:result:ro, which jobs:ro and jobs:rw imply, or *)
RESULTS_SCOPES = ("jobs:ro", "jobs:result:ro")
RESULT_FIELDS = ("result", "last_error", "stderr", "logs")


def sees_results(principal: config_mod.Token) -> bool:
    return any(grants(principal.scopes, s) for s in RESULTS_SCOPES)


def results_for(principal: config_mod.Token, entry: dict[str, Any]) -> dict[str, Any]:
    """`entry` without what the job produced, unless the principal may see results (Ductile's narrow
    jobs:status:ro / jobs:tree:ro / jobs:logs:ro tokens see status, not output)."""
    if sees_results(principal):
        return entry
    return {k: v for k, v in entry.items() if k not in RESULT_FIELDS}


def authority(principal: config_mod.Token) -> scopes.Authority:
    """The caller's authority, to travel with the work it causes (see services/core/scopes.py)."""
    return scopes.Authority(principal=principal.name, scopes=frozenset(principal.scopes))


def check_work(principal: config_mod.Token, catalog: catalog_mod.Catalog, plugin: str, command: str) -> None:
    """403 unless the principal holds what the direct route for running `plugin.command` needs
    (a replay, a retry or a Laddr job must not run what POST /plugin or /pipeline would refuse)."""
    needed = scopes.work_scope(catalog, plugin, command)
    if needed is not None and not grants(principal.scopes, needed):
        raise errors.Forbidden(
            f"this token lacks {needed}, which running {plugin}.{command} needs", required_scopes=[needed]
        )

"""The metrics port of a service run on its own (`headrace dispatcher|runner|projector --metrics-port N`,
which serve no HTTP otherwise): one aiohttp app answering GET /metrics with the process's registry
(services/core/metrics.py). It is guarded as the API's GET /metrics is: a bearer token of
`api.auth.tokens` holding a scope the route table gives that route (services/core/scopes.py).
Given a probe, it also answers GET /healthz (services/core/health.py), open as the API's is, error texts
only for an admin token.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable

from aiohttp import web

from services.core import config as config_mod
from services.core import errors, health, logging, metrics, scopes

log = logging.get("metrics")

PATH = "/metrics"
#: the tokens valid now (a reloaded config's, for a service that takes reloads)
Tokens = Callable[[], Iterable[config_mod.Token]]


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()


def _bearer(authorization: str) -> str | None:
    scheme, _, value = authorization.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _find(presented: str, tokens: Iterable[config_mod.Token]) -> config_mod.Token | None:
    """The token presented, compared in constant time over every token, as the API's token table does."""
    digest = _digest(presented)
    found = None
    for token in tokens:
        if hmac.compare_digest(_digest(token.token), digest):
            found = token
    return found


def is_admin(authorization: str, tokens: Iterable[config_mod.Token]) -> bool:
    """A valid bearer token with the `*` scope (it may read /healthz's error texts)."""
    presented = _bearer(authorization)
    found = _find(presented, tokens) if presented else None
    return found is not None and scopes.grants(found.scopes, "*")


def refusal(authorization: str, tokens: Iterable[config_mod.Token]) -> errors.ApiError | None:
    """Why a request with this Authorization header may not scrape (None: it may)."""
    presented = _bearer(authorization)
    if presented is None:
        return errors.Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    found = _find(presented, tokens)
    if found is None:
        return errors.Unauthorized("invalid bearer token")
    rule = scopes.route_rule("GET", PATH)
    needed = rule.any_of if rule is not None else ("*",)
    if not scopes.grants_any(found.scopes, needed):
        return errors.Forbidden(
            f"this token lacks the scope for this action (needs {' or '.join(needed)})", required_scopes=list(needed)
        )
    return None


class MetricsServer:
    """GET /metrics (HEAD too) on host:port, and GET /healthz when given a probe."""

    def __init__(self, tokens: Tokens, *, host: str, port: int, probe: health.Probe | None = None) -> None:
        self.tokens = tokens
        self.host = host
        self.port = port
        self.probe = probe
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        return f"http://{host}:{self.port}{PATH}"

    async def _scrape(self, request: web.Request) -> web.Response:
        problem = refusal(request.headers.get("Authorization", ""), self.tokens())
        if problem is not None:
            return web.json_response(problem.body(), status=problem.status)
        body, content_type = metrics.render(request.headers.get("Accept"))
        response = web.Response(body=body, headers={"Content-Type": content_type})
        response.enable_compression()
        return response

    async def _healthz(self, request: web.Request) -> web.Response:
        assert self.probe is not None
        status, body = await self.probe.report(admin=is_admin(request.headers.get("Authorization", ""), self.tokens()))
        return web.json_response(body, status=status)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(PATH, self._scrape)
        if self.probe is not None:
            app.router.add_get(health.PATH, self._healthz)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        log.info("metrics_listening", url=self.url)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

"""The middleware that enforces the route table of services/core/scopes.py before any handler
runs (401 without a valid token, 403 without the route's scope), and the start-up check that
every registered route has an entry in it.

Handlers that cause work check the work's own scope on top (`auth.check_work`); a handler's
remaining `auth.require` is the same gate again and never stricter than the table
(tests/e2e/test_scope_matrix.py checks the two agree).
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from services.api import auth, relay, webhooks
from services.core import errors, scopes


def rule_of(route: web.AbstractRoute) -> scopes.Rule | None:
    """The table's rule for a registered route (webhook routes share one entry)."""
    if route.handler is webhooks.receive:
        return scopes.ROUTES.get(("POST", scopes.WEBHOOK_PATH))
    if route.handler is relay.receive:  # the peer's signature is the authentication
        return scopes.ROUTES.get(("POST", scopes.RELAY_PATH))
    resource = route.resource
    if resource is None:
        return None
    return scopes.route_rule(route.method, resource.canonical)


def unruled(app: web.Application) -> list[str]:
    """`METHOD path` of every registered route that has no rule."""
    return [
        f"{r.method} {r.resource.canonical if r.resource else '?'}"
        for r in app.router.routes()
        if r.method != "*" and rule_of(r) is None
    ]


def check_table(app: web.Application) -> None:
    """Refuse to build an app with a route the scope table does not cover (fail closed)."""
    missing = unruled(app)
    if missing:
        raise RuntimeError("routes without an entry in services/core/scopes.py ROUTES: " + ", ".join(missing))


@web.middleware
async def scope_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    match = request.match_info
    if match.http_exception is not None:  # no route (404/405): nothing to guard
        return await handler(request)
    rule = rule_of(match.route)
    if rule is None:  # unreachable after check_table; refuse rather than serve unguarded
        raise errors.Forbidden("this route has no scope rule")
    if not rule.open and not rule.websocket:  # a WebSocket handler checks its own credentials
        auth.require(request, *rule.any_of, allow_query=rule.query_token, narrow=rule.narrow)
    return await handler(request)

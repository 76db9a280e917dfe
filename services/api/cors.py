"""CORS as Ductile's `corsMiddleware` does it (shared/spec/ductile-conformance.md §1.1), from
`api.allowed_origins`:

* no `Origin`, or one not listed (and no `*` listed): nothing is added and the request goes on;
* a listed origin: `Vary: Origin`, `Access-Control-Allow-Origin: <origin>`,
  `Access-Control-Allow-Credentials: true`, `Access-Control-Expose-Headers: Link`;
* `*` listed: any origin gets `Access-Control-Allow-Origin: *` and no Allow-Credentials;
* a preflight (`OPTIONS` with `Access-Control-Request-Method`) from an allowed origin is answered
  here, before auth and every other middleware: 204, no body, with the allowed methods and headers.

The headers are added in `on_response_prepare`, so error replies and `/events` streams carry them too.
The list is read from the current config, so a reload changes it.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from services.api import state

ALLOW_METHODS = "GET, POST, PUT, DELETE, OPTIONS"
ALLOW_HEADERS = "Accept, Authorization, Content-Type, X-CSRF-Token"
MAX_AGE = "300"


def allowed(origins: tuple[str, ...], origin: str | None) -> str | None:
    """The Access-Control-Allow-Origin value for `origin`, or None when it gets no CORS headers."""
    if not origin:
        return None
    if "*" in origins:
        return "*"
    return origin if origin in origins else None


def _add(response: web.StreamResponse, allow: str) -> None:
    response.headers.add("Vary", "Origin")
    response.headers["Access-Control-Allow-Origin"] = allow
    if allow != "*":
        response.headers["Access-Control-Allow-Credentials"] = "true"
    response.headers["Access-Control-Expose-Headers"] = "Link"


@web.middleware
async def preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method == "OPTIONS" and request.headers.get("Access-Control-Request-Method"):
        allow = allowed(_origins(request), request.headers.get("Origin"))
        if allow is not None:
            response = web.Response(status=204)
            response.headers.add("Vary", "Access-Control-Request-Method")
            response.headers.add("Vary", "Access-Control-Request-Headers")
            response.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
            response.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
            response.headers["Access-Control-Max-Age"] = MAX_AGE
            return response
    return await handler(request)


def _origins(request: web.Request) -> tuple[str, ...]:
    return state.of(request).config.api.allowed_origins


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    allow = allowed(_origins(request), request.headers.get("Origin"))
    if allow is not None and "Access-Control-Allow-Origin" not in response.headers:
        _add(response, allow)


def setup(app: web.Application) -> None:
    app.on_response_prepare.append(_on_prepare)

"""The request id: every request has one, for the duration of its handling bound into the structured
logs (structlog contextvars, `request_id`) and answered as the `X-Request-Id` response header.

A client's `X-Request-Id` is kept when it is 1 to 128 printable ASCII characters without spaces (what a
proxy or a caller's tracing puts there); anything else, or none, gets a fresh id. The header is added in
`on_response_prepare`, so error replies, `/events` streams and WebSocket upgrades carry it too. Error
bodies do not: Ductile's are exactly `{"error": …}` and Laddr's FastAPI's `{"detail": …}`.
"""

from __future__ import annotations

import re
import uuid

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

HEADER = "X-Request-Id"
MAX_LENGTH = 128
_ACCEPTED = re.compile(rf"[\x21-\x7e]{{1,{MAX_LENGTH}}}")
REQUEST_ID = web.RequestKey("request_id", str)


def chosen(offered: str | None) -> str:
    """The id of a request that offered `offered`: it, when acceptable, else a new one."""
    if offered is not None and _ACCEPTED.fullmatch(offered):
        return offered
    return uuid.uuid4().hex


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request[REQUEST_ID] = chosen(request.headers.get(HEADER))
    with structlog.contextvars.bound_contextvars(request_id=request_id):
        return await handler(request)


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    request_id = request.get(REQUEST_ID)
    if request_id is not None:
        response.headers[HEADER] = request_id


def setup(app: web.Application) -> None:
    app.on_response_prepare.append(_on_prepare)

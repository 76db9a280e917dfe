"""The middleware that counts every request the API answers and times it (services/core/metrics.py
`http_request`), labelled by the matched route's template (`/job/{job_id}`, never the raw path) or
`<unmatched>`, so the series stay bounded whatever paths clients send."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from services.core import metrics

#: nginx's code for a request whose client went away before it was answered
CLIENT_CLOSED = 499


def route_of(request: web.Request) -> str:
    """The template of the route that serves `request`, or metrics.UNMATCHED_ROUTE."""
    match = request.match_info
    resource = match.route.resource if match.http_exception is None else None
    return resource.canonical if resource is not None else metrics.UNMATCHED_ROUTE


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500  # an exception no inner middleware turned into a response
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = CLIENT_CLOSED
        raise
    finally:
        metrics.http_request(request.method, route_of(request), status, time.perf_counter() - started)

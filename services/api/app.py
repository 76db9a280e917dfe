"""create_app(config, bus, pool) -> web.Application: mounts every resource module and the
error middleware that renders `errors.ApiError` (and anything unexpected) as JSON.
"""

from __future__ import annotations

import asyncio

import asyncpg
import nats.errors
from aiohttp import web
from aiohttp.typedefs import Handler

from services.api import (
    analytics,
    api_docs,
    auth,
    bodies,
    config_view,
    cors,
    dashboard,
    discovery,
    doctor,
    events,
    guard,
    http_errors,
    http_metrics,
    ingest,
    inputs,
    job_actions,
    jobs,
    laddr_agents,
    laddr_batches,
    laddr_cancel,
    laddr_dialect,
    laddr_jobs,
    laddr_prompts,
    laddr_responses,
    laddr_system,
    laddr_traces,
    laddr_ws,
    limits,
    listing,
    metrics_route,
    pipelines,
    plugins,
    relay,
    reload,
    request_ids,
    scheduler,
    state,
    stopwatch,
    system,
    topology,
    vault,
    webhooks,
)
from services.core import bus as bus_mod
from services.core import catalog as catalog_mod
from services.core import config as config_mod
from services.core import errors, logging

log = logging.get("api")

RESOURCES = (
    system.routes,
    plugins.routes,
    jobs.routes,
    job_actions.routes,
    discovery.routes,
    listing.routes,
    analytics.routes,
    config_view.routes,
    pipelines.routes,
    reload.routes,
    laddr_jobs.routes,
    laddr_prompts.routes,
    laddr_agents.routes,
    laddr_traces.routes,
    laddr_responses.routes,
    laddr_cancel.routes,
    laddr_batches.routes,
    laddr_ws.routes,
    api_docs.routes,
    dashboard.routes,
    laddr_system.routes,
    events.routes,
    ingest.routes,
    scheduler.routes,
    doctor.routes,
    topology.routes,
    stopwatch.routes,
    metrics_route.routes,
)


def error_response(exc: errors.ApiError) -> web.Response:
    headers = {"Allow": exc.allowed} if isinstance(exc, errors.MethodNotAllowed) else None  # RFC 9110
    return web.json_response(exc.body(), status=exc.status, headers=headers, dumps=state.dumps)


def problem_of(request: web.Request, exc: Exception) -> errors.ApiError | None:
    """The API error a failure of this request is (None: not an error, let aiohttp send it)."""
    if isinstance(exc, errors.ApiError):
        return exc
    if isinstance(exc, errors.TransientError):
        log.warning("dependency_unavailable", path=request.path, error=exc.message)
        return errors.ServiceUnavailable(exc.message)
    if isinstance(exc, web.HTTPException):
        if exc.status == 413:
            return errors.PayloadTooLarge()
        if exc.status == 405:
            allowed = ", ".join(sorted(getattr(exc, "allowed_methods", ()) or ()))
            return errors.MethodNotAllowed(
                f"method {request.method} not allowed on {request.path}",
                allowed=allowed or exc.headers.get("Allow", ""),
            )
        if exc.status == 404:
            return errors.NotFound(f"no route for {request.method} {request.path}")
        if exc.status >= 400 and exc.content_type != "application/json":
            problem = errors.ApiError(exc.reason)
            problem.status, problem.code = exc.status, "http_error"
            return problem
        return None
    if isinstance(exc, nats.errors.Error | TimeoutError):
        log.warning("nats_unavailable", path=request.path, error=str(exc) or type(exc).__name__)
        return errors.ServiceUnavailable("the event bus (NATS) is unavailable; retry shortly")
    if isinstance(
        exc, asyncpg.PostgresConnectionError | asyncpg.InterfaceError | asyncpg.InternalClientError | OSError
    ):
        log.warning("postgres_unavailable", path=request.path, error=str(exc))
        return errors.ServiceUnavailable("the read-model database is unavailable")
    log.exception("unhandled_error", method=request.method, path=request.path)
    return errors.ApiError("internal error")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure as JSON: Headrace's `{error, code, ...}`, or on Laddr's paths its dialect's body."""
    try:
        return await handler(request)
    except Exception as exc:
        problem = problem_of(request, exc)
        if problem is None:
            raise
        if laddr_dialect.applies(request.path):
            return await laddr_dialect.render(request, problem)
        return error_response(problem)


def create_app(
    config: config_mod.Config, *, bus: bus_mod.Bus, pool: asyncpg.Pool, catalog: catalog_mod.Catalog | None = None
) -> web.Application:
    middlewares = [
        http_metrics.middleware,  # outermost: counts every answer, the other middlewares' included
        request_ids.middleware,
        cors.preflight,
        laddr_dialect.middleware,
        error_middleware,
        limits.limits_middleware,
        inputs.input_middleware,
        http_errors.body_encoding_middleware,
        guard.scope_guard,
    ]
    app = web.Application(middlewares=middlewares, client_max_size=config.api.max_body_bytes)
    app[bodies.MAX_BODY_BYTES] = config.api.max_body_bytes
    app[state.STATE] = state.ApiState(
        config=config,
        catalog=catalog or config_mod.plugin_catalog(config),
        bus=bus,
        pool=pool,
        source=config_mod.instance_name("api"),
    )
    app[auth.TABLE] = auth.TokenTable(config.api.tokens)
    app[pipelines.SYNC_SLOTS] = asyncio.Semaphore(config.api.max_concurrent_sync)
    for routes in RESOURCES:
        app.add_routes(routes)
    webhooks.add_routes(app, config)
    vault.add_routes(app, config)
    relay.add_routes(app, config)
    events.setup(app)
    guard.check_table(app)
    limits.setup(app)
    cors.setup(app)
    request_ids.setup(app)
    return app

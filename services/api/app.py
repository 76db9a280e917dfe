"""create_app(config, bus, pool) -> web.Application: mounts every resource module and the
error middleware that renders `errors.ApiError` (and anything unexpected) as JSON.
"""

from __future__ import annotations

import asyncio

import asyncpg
import nats.errors
from aiohttp import web

from services.api import (
    analytics,
    api_docs,
    auth,
    bodies,
    config_view,
    cors,
    discovery,
    doctor,
    events,
    guard,
    http_errors,
    ingest,
    inputs,
    job_actions,
    jobs,
    laddr_agents,
    laddr_batches,
    laddr_cancel,
    laddr_jobs,
    laddr_prompts,
    laddr_responses,
    laddr_traces,
    laddr_ws,
    limits,
    listing,
    pipelines,
    plugins,
    relay,
    reload,
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

RESOURCES = (system.routes, plugins.routes, jobs.routes, job_actions.routes, discovery.routes, listing.routes,
             analytics.routes, config_view.routes, pipelines.routes, reload.routes,
             laddr_jobs.routes, laddr_prompts.routes, laddr_agents.routes, laddr_traces.routes, laddr_responses.routes,
             laddr_cancel.routes, laddr_batches.routes,
             laddr_ws.routes, api_docs.routes,
             events.routes, ingest.routes, scheduler.routes, doctor.routes, topology.routes, stopwatch.routes)


def error_response(exc: errors.ApiError) -> web.Response:
    return web.json_response(exc.body(), status=exc.status, dumps=state.dumps)


@web.middleware
async def error_middleware(request: web.Request, handler: web.Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except errors.ApiError as exc:
        return error_response(exc)
    except errors.TransientError as exc:
        log.warning("dependency_unavailable", path=request.path, error=exc.message)
        return error_response(errors.ServiceUnavailable(exc.message))
    except web.HTTPException as exc:
        if exc.status == 413:
            return error_response(errors.PayloadTooLarge())
        if exc.status == 405:
            allowed = ", ".join(sorted(getattr(exc, "allowed_methods", ()) or ()))
            return web.json_response({"error": f"method {request.method} not allowed on {request.path}",
                                      "code": "method_not_allowed"}, status=405,
                                     headers={"Allow": allowed or exc.headers.get("Allow", "")})  # RFC 9110
        if exc.status == 404:
            return error_response(errors.NotFound(f"no route for {request.method} {request.path}"))
        if exc.status >= 400 and exc.content_type != "application/json":
            return web.json_response({"error": exc.reason, "code": "http_error"}, status=exc.status)
        raise
    except (nats.errors.Error, TimeoutError) as exc:
        log.warning("nats_unavailable", path=request.path, error=str(exc) or type(exc).__name__)
        return error_response(errors.ServiceUnavailable("the event bus (NATS) is unavailable; retry shortly"))
    except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError) as exc:
        log.warning("postgres_unavailable", path=request.path, error=str(exc))
        return error_response(errors.ServiceUnavailable("the read-model database is unavailable"))
    except Exception:
        log.exception("unhandled_error", method=request.method, path=request.path)
        return web.json_response({"error": "internal error", "code": "internal_error"}, status=500)


def create_app(config: config_mod.Config, *, bus: bus_mod.Bus, pool: asyncpg.Pool,
               catalog: catalog_mod.Catalog | None = None) -> web.Application:
    middlewares = [cors.preflight, error_middleware, limits.limits_middleware, inputs.input_middleware,
                   http_errors.body_encoding_middleware, guard.scope_guard]
    app = web.Application(middlewares=middlewares, client_max_size=config.api.max_body_bytes)
    app[bodies.MAX_BODY_BYTES] = config.api.max_body_bytes
    app[state.STATE] = state.ApiState(
        config=config, catalog=catalog or config_mod.plugin_catalog(config), bus=bus, pool=pool,
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
    return app

"""POST /system/reload (`*`, or system:rw): reload the config in every service or in none
(services/core/reload_coordinator.py). 200 once every service that prepared it has applied it
(`services`; `pending` lists one that had not acked in time); 409 with the reason and the old
config everywhere when any service cannot take it.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from aiohttp import web

from services.api import auth, state
from services.core import config as config_mod
from services.core import errors, reload_coordinator

routes = web.RouteTableDef()

#: set by the API service (services/api/service.py); an app without it answers 501, as Ductile does
COORDINATOR = web.AppKey("reload_coordinator", reload_coordinator.Coordinator)


def apply(app: web.Application, fresh: config_mod.Config) -> None:
    """Swap the config the API serves from (tokens, plugins, pipelines)."""
    st = app[state.STATE]
    st.config = fresh
    st.catalog = config_mod.plugin_catalog(fresh)
    app[auth.TABLE].replace(fresh.api.tokens)


@routes.post("/system/reload")
async def reload_config(request: web.Request) -> web.Response:
    auth.require(request, "*", narrow=("system:rw",))
    coordinator = request.app.get(COORDINATOR)
    if coordinator is None:
        return web.json_response({"error": "reload not supported"}, status=501)
    try:
        # not tied to the client's connection (as Ductile's): a reload once started runs to its end
        outcome = await asyncio.shield(coordinator.reload())
    except reload_coordinator.Refused as exc:
        raise errors.Conflict(exc.message, failed=exc.failed) from exc
    return web.json_response(
        {
            "status": "ok",
            "reloaded_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "message": "configuration reloaded",
            "fingerprint": outcome.fingerprint,
            "services": outcome.applied,
            "pending": outcome.pending,
        },
        dumps=state.dumps,
    )

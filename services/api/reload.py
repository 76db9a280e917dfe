"""POST /system/reload (`*`): re-read and validate the config file, apply it here, and announce
it to every other service with an event. An invalid file → 409 with the reason; the old config stays.
"""

from __future__ import annotations

from aiohttp import web

from services.api import auth, state
from services.core import config as config_mod
from services.core import envelope, errors, reloads

routes = web.RouteTableDef()


def apply(app: web.Application, fresh: config_mod.Config) -> None:
    """Swap the config the API serves from (tokens, plugins, pipelines)."""
    st = app[state.STATE]
    st.config = fresh
    st.catalog = config_mod.plugin_catalog(fresh)
    app[auth.TABLE].replace(fresh.api.tokens)


@routes.post("/system/reload")
async def reload_config(request: web.Request) -> web.Response:
    auth.require(request, "*", narrow=("system:rw",))
    st = state.of(request)
    try:
        fresh = config_mod.reload(st.config)
    except errors.ConfigError as exc:
        raise errors.Conflict(f"configuration not reloaded, the previous one stays: {exc.message}") from exc
    apply(request.app, fresh)
    await st.bus.publish(*reloads.reloaded_event(fresh, source=st.source))
    return web.json_response({"status": "ok", "reloaded_at": envelope.rfc3339(envelope.now()),
                              "message": "Configuration reloaded successfully.",
                              "fingerprint": config_mod.fingerprint(fresh)})

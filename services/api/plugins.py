"""POST /plugin/{plugin}/{command}: direct execution of one plugin command (one job).

401 without a token, 404 for an unknown/disabled plugin or command, 403 when the token
may not call it (plugin:ro calls only `read` commands), 400 for a bad body, else 202.
"""

from __future__ import annotations

from aiohttp import web

from services.api import auth, bodies, state, submit
from services.core import errors

routes = web.RouteTableDef()


def resolve_command(st: state.ApiState, plugin: str, command: str) -> tuple[str, str]:
    """(plugin, command) if it can be called, else NotFound with the reason."""
    manifest = st.catalog.get(plugin)
    if manifest is None:
        raise errors.NotFound(f"plugin {plugin!r} not found", plugin=plugin)
    if not st.config.plugin(plugin).enabled:
        raise errors.NotFound(f"plugin {plugin!r} is disabled", plugin=plugin)
    if command not in manifest.commands:
        raise errors.NotFound(f"plugin {plugin!r} has no command {command!r}", plugin=plugin, command=command,
                              commands=sorted(manifest.commands))
    return plugin, command


@routes.post("/plugin/{plugin}/{command}")
async def run_command(request: web.Request) -> web.Response:
    principal = auth.authenticate(request)
    auth.check(principal, "plugin:ro", "plugin:rw")
    st = state.of(request)
    plugin, command = resolve_command(st, request.match_info["plugin"], request.match_info["command"])
    spec = st.catalog.plugins[plugin].commands[command]
    if spec.type != "read":
        auth.check(principal, "plugin:rw")
    body = await bodies.json_object(request)
    payload = bodies.optional_object(body, "payload")
    event = {"type": "api.trigger", "payload": payload} if command == "handle" else None
    job_id = await submit.submit_job(st, plugin=plugin, command=command, payload=payload, event=event)
    return web.json_response(
        {"job_id": job_id, "status": "queued", "plugin": plugin, "command": command}, status=202
    )

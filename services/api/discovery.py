"""Capability discovery for agents and operators (Ductile API sections 7-9).

GET /plugins, /skills, /openapi.json, /plugin/{name}/openapi.json and
/.well-known/ai-plugin.json are unauthenticated; GET /plugin/{name} needs plugin:ro
(plugin:rw and * imply it). Every answer is derived from the plugin catalog (enabled
plugins only) and the configured pipelines; a disabled or unknown plugin is a 404.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from aiohttp import web

from services.api import auth, state, system
from services.core import catalog as catalog_mod
from services.core import durations, errors

routes = web.RouteTableDef()

OPENAPI_VERSION = "3.1.0"
TITLE = "Headrace Gateway"
RESPONSES = {
    "202": {"description": "Job queued"},
    "400": {"description": "Bad request"},
    "401": {"description": "Missing or invalid bearer token"},
    "403": {"description": "Insufficient scope"},
    "404": {"description": "Plugin or command not found"},
}
EXECUTION_MODES = {"async": "asynchronous", "sync": "synchronous"}
AI_PLUGIN = {
    "schema_version": "v1",
    "name_for_human": TITLE,
    "name_for_model": "headrace",
    "description_for_human": "Integration gateway for triggering plugins and pipelines.",
    "description_for_model": (
        "Discover and invoke plugins. Fetch /openapi.json for the full spec, or /plugin/{name}/openapi.json "
        "for a single plugin. Invoke commands via POST /plugin/{name}/{command}."
    ),
    "auth": {"type": "bearer"},
    "api": {"type": "openapi", "url": "/openapi.json"},
}


# --- the catalog as discovery sees it -------------------------------------------------------------


def enabled_plugins(st: state.ApiState) -> list[catalog_mod.Manifest]:
    """Every enabled plugin of the catalog, sorted by name."""
    return [m for name, m in sorted(st.catalog.plugins.items()) if st.config.plugin(name).enabled]


def enabled_plugin(st: state.ApiState, name: str) -> catalog_mod.Manifest:
    """The named plugin, or NotFound saying whether it is unknown or disabled."""
    manifest = st.catalog.get(name)
    if manifest is None:
        raise errors.NotFound(f"plugin {name!r} not found", plugin=name)
    if not st.config.plugin(name).enabled:
        raise errors.NotFound(f"plugin {name!r} is disabled", plugin=name)
    return manifest


def summary(plugin: str, command: catalog_mod.Command) -> str:
    """The command's description, or "{plugin}: {command}" when the manifest has none."""
    return command.description or f"{plugin}: {command.name}"


def respond(body: Any) -> web.Response:
    return web.json_response(body, dumps=state.dumps)


# --- /plugins and /plugin/{name} ------------------------------------------------------------------


def plugin_summary(manifest: catalog_mod.Manifest) -> dict[str, Any]:
    return {
        "name": manifest.name,
        "version": manifest.version,
        "description": manifest.description,
        "commands": list(manifest.commands),
    }


def command_detail(command: catalog_mod.Command) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": command.name,
        "type": command.type,
        "description": command.description,
        "input_schema": dict(command.input_schema or {}),
    }
    if command.output_schema is not None:
        out["output_schema"] = dict(command.output_schema)
    out["idempotent"] = command.idempotent
    out["retry_safe"] = command.retry_safe
    if command.values is not None:
        out["values"] = dict(command.values)
    return out


def plugin_detail(manifest: catalog_mod.Manifest) -> dict[str, Any]:
    return {
        "name": manifest.name,
        "version": manifest.version,
        "description": manifest.description,
        "protocol": manifest.protocol,
        "commands": [command_detail(c) for c in manifest.commands.values()],
    }


@routes.get("/plugins")
async def list_plugins(request: web.Request) -> web.Response:
    return respond({"plugins": [plugin_summary(m) for m in enabled_plugins(state.of(request))]})


@routes.get("/plugin/{name}")
async def get_plugin(request: web.Request) -> web.Response:
    auth.require(request, "plugin:ro")
    return respond(plugin_detail(enabled_plugin(state.of(request), request.match_info["name"])))


# --- OpenAPI ---------------------------------------------------------------------------------------


def operation(plugin: str, command: catalog_mod.Command) -> dict[str, Any]:
    """The `post` operation of `/plugin/{plugin}/{command}`; no requestBody without an input_schema."""
    op: dict[str, Any] = {
        "operationId": f"{plugin}__{command.name}",
        "summary": summary(plugin, command),
        "tags": [plugin],
    }
    if command.input_schema:
        op["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": dict(command.input_schema)}},
        }
    op["responses"] = {code: dict(resp) for code, resp in RESPONSES.items()}
    op["security"] = [{"BearerAuth": []}]
    return op


def plugin_paths(manifest: catalog_mod.Manifest) -> dict[str, Any]:
    return {
        f"/plugin/{manifest.name}/{command.name}": {"post": operation(manifest.name, command)}
        for command in manifest.commands.values()
    }


def openapi_document(manifests: list[catalog_mod.Manifest]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for manifest in manifests:
        paths.update(plugin_paths(manifest))
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": TITLE, "version": system.version()},
        "paths": paths,
        "components": {"securitySchemes": {"BearerAuth": {"type": "http", "scheme": "bearer"}}},
    }


@routes.get("/openapi.json")
async def global_openapi(request: web.Request) -> web.Response:
    return respond(openapi_document(enabled_plugins(state.of(request))))


@routes.get("/plugin/{name}/openapi.json")
async def plugin_openapi(request: web.Request) -> web.Response:
    return respond(openapi_document([enabled_plugin(state.of(request), request.match_info["name"])]))


# --- /skills ---------------------------------------------------------------------------------------


def plugin_skills(manifest: catalog_mod.Manifest) -> Iterator[dict[str, Any]]:
    for command in manifest.commands.values():
        yield {
            "name": f"plugin.{manifest.name}.{command.name}",
            "kind": "plugin",
            "description": summary(manifest.name, command),
            "endpoint": f"/plugin/{manifest.name}/{command.name}",
            "tier": "READ" if command.type == "read" else "WRITE",
            "plugin": manifest.name,
            "command": command.name,
        }


def timeout_secs(value: Any) -> int | None:
    """A pipeline's `timeout` in whole seconds; None when unset or not a duration."""
    if value is None:
        return None
    try:
        return int(durations.parse_seconds(value))
    except (ValueError, TypeError, AttributeError):
        return None


def execution_mode(value: Any) -> str:
    if not value:
        return "asynchronous"
    return EXECUTION_MODES.get(str(value), str(value))


def pipeline_skill(pipeline: Mapping[str, Any]) -> dict[str, Any]:
    name = pipeline["name"]
    return {
        "name": f"pipeline.{name}",
        "kind": "pipeline",
        "endpoint": f"/pipeline/{name}",
        "pipeline": name,
        "trigger": pipeline.get("on"),
        "execution_mode": execution_mode(pipeline.get("execution_mode")),
        "timeout_secs": timeout_secs(pipeline.get("timeout")),
    }


@routes.get("/skills")
async def list_skills(request: web.Request) -> web.Response:
    st = state.of(request)
    skills = [skill for m in enabled_plugins(st) for skill in plugin_skills(m)]
    skills.extend(pipeline_skill(p) for p in st.config.pipelines)
    return respond({"skills": skills})


# --- /.well-known/ai-plugin.json -------------------------------------------------------------------


@routes.get("/.well-known/ai-plugin.json")
async def ai_plugin(request: web.Request) -> web.Response:
    return respond(AI_PLUGIN)

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

from services.api import auth, idempotency, plugins, state
from services.core import catalog as catalog_mod
from services.core import durations, errors
from services.core.version import version

routes = web.RouteTableDef()

OPENAPI_VERSION = "3.1.0"
TITLE = "Headrace Gateway"
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "code"],
    "properties": {"error": {"type": "string"}, "code": {"type": "string"}},
}
QUEUED_SCHEMA = {
    "type": "object",
    "required": ["job_id", "status", "plugin", "command"],
    "properties": {
        "job_id": {"type": "string"},
        "status": {"const": "queued"},
        "plugin": {"type": "string"},
        "command": {"type": "string"},
    },
}
ERRORS = {
    "400": "Bad request: malformed JSON, a body that is not an object, unknown fields without `payload`, "
    "or a payload that violates the command's input_schema",
    "401": "Missing or invalid bearer token",
    "403": "Insufficient scope (plugin:ro runs `read` commands only, everything else needs plugin:rw)",
    "404": "Plugin or command not found, or the plugin is disabled",
    "409": "Idempotency-Key already used for a different request, or still in progress",
    "413": "Request body too large",
    "429": "Too many requests",
    "503": "The event bus or the database is unavailable; retry shortly",
}
#: the Idempotency-Key header every work-creating POST reads (services/api/idempotency.py)
IDEMPOTENCY_KEY = {
    "name": idempotency.HEADER,
    "in": "header",
    "required": False,
    "description": "The same key (per token) within service.dedupe_ttl returns the first response and creates "
    "nothing; the same key with a different body is 409.",
    "schema": {"type": "string", "minLength": 1, "maxLength": idempotency.MAX_KEY_LENGTH, "pattern": "\\S"},
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
    auth.require(request, "plugin:ro", narrow=("plugin:catalog:ro",))
    return respond(plugin_detail(enabled_plugin(state.of(request), request.match_info["name"])))


# --- OpenAPI ---------------------------------------------------------------------------------------


def request_body(plugin: str, command: catalog_mod.Command) -> dict[str, Any] | None:
    """The body POST /plugin/{plugin}/{command} reads: `{"payload": <input_schema>}` (no requestBody
    without an input_schema, as in Ductile). When the input_schema admits `{}`, the body may be left
    out, be `{}` or carry `"payload": null` (all read as `{}`); other keys are ignored next to
    `payload` and refused without it (bodies.payload)."""
    schema = dict(command.input_schema or {})
    if not schema:
        return None
    validator = plugins.input_validator(plugin, command)
    empty_ok = validator is None or validator.is_valid({})
    body: dict[str, Any] = {"type": "object"}
    if empty_ok:
        body["properties"] = {"payload": {"anyOf": [schema, {"type": "null"}]}}
        body["anyOf"] = [{"required": ["payload"]}, {"maxProperties": 0}]
    else:
        body["properties"] = {"payload": schema}
        body["required"] = ["payload"]
    return {"required": not empty_ok, "content": {"application/json": {"schema": body}}}


def responses() -> dict[str, Any]:
    json_error = {"application/json": {"schema": ERROR_SCHEMA}}
    out: dict[str, Any] = {
        "202": {"description": "Job queued", "content": {"application/json": {"schema": QUEUED_SCHEMA}}}
    }
    out.update({code: {"description": text, "content": json_error} for code, text in ERRORS.items()})
    return out


def operation(plugin: str, command: catalog_mod.Command) -> dict[str, Any]:
    """The `post` operation of `/plugin/{plugin}/{command}`."""
    op: dict[str, Any] = {
        "operationId": f"{plugin}__{command.name}",
        "summary": summary(plugin, command),
        "tags": [plugin],
        "parameters": [IDEMPOTENCY_KEY],
    }
    body = request_body(plugin, command)
    if body is not None:
        op["requestBody"] = body
    op["responses"] = responses()
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
        "info": {"title": TITLE, "version": version()},
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
    """One skill per command, commands by name (Ductile's handleListSkills sorts them)."""
    for command in sorted(manifest.commands.values(), key=lambda c: c.name):
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


def pipeline_skill(pipeline: Mapping[str, Any], compiled: Any = None) -> dict[str, Any]:
    """A pipeline's skill as Ductile lists it: `trigger` is the `on:` (else the `on-hook:`) value and
    `timeout_secs` the compiled timeout (default 30 s), each left out when empty."""
    name = pipeline["name"]
    trigger = pipeline.get("on") or pipeline.get("on-hook") or pipeline.get("on_hook")
    timeout = compiled.timeout_s if compiled is not None else None
    if timeout is None:
        timeout = timeout_secs(pipeline.get("timeout"))
    skill: dict[str, Any] = {
        "name": f"pipeline.{name}",
        "kind": "pipeline",
        "endpoint": f"/pipeline/{name}",
        "pipeline": name,
        "trigger": trigger,
        "execution_mode": execution_mode(pipeline.get("execution_mode")),
        "timeout_secs": int(timeout) if timeout else None,
    }
    return {k: v for k, v in skill.items() if v is not None and v != ""}


@routes.get("/skills")
async def list_skills(request: web.Request) -> web.Response:
    st = state.of(request)
    skills = [skill for m in enabled_plugins(st) for skill in plugin_skills(m)]
    compiled = getattr(st.config.routes, "pipelines", None) or {}
    named = sorted(
        (p for p in st.config.pipelines if isinstance(p, Mapping) and p.get("name")), key=lambda p: str(p["name"])
    )
    skills.extend(pipeline_skill(p, compiled.get(p["name"])) for p in named)
    return respond({"skills": skills})


# --- /.well-known/ai-plugin.json -------------------------------------------------------------------


@routes.get("/.well-known/ai-plugin.json")
async def ai_plugin(request: web.Request) -> web.Response:
    return respond(AI_PLUGIN)

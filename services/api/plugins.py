"""POST /plugin/{plugin}/{command}: direct execution of one plugin command (one job).

401 without a token, 404 for an unknown/disabled plugin or command, 403 when the token
may not call it (plugin:ro calls only `read` commands), 400 for a bad body or a payload
that violates the command's `input_schema`, else 202.

`?wait=<duration>` (Headrace's own; e.g. `wait=10s`, at most 5 minutes; `wait=true`: 30 s) waits for the job to be
final, on its events (never by polling), holding one of the API's sync slots (429 when all are
taken): 200 with `{job_id, status, plugin, command, attempt, duration_ms, result, error}` as its
final event says (a failed attempt is not final: the dispatcher's retry or dead letter is), or,
when the wait runs out first, the 202 body with `timeout_exceeded: true`. The dispatcher still
decides; the API only listens.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import jsonschema
from aiohttp import web

from services.api import auth, bodies, idempotency, pipelines, state, submit
from services.core import catalog as catalog_mod
from services.core import durations, envelope, errors, job_waits, offload, schemas, scopes

routes = web.RouteTableDef()

MAX_VIOLATIONS = 20
MAX_WAIT_S = 300.0
#: `?wait=true`: as long as a Laddr chat waits by default
DEFAULT_WAIT_S = 30.0

#: (plugin, command) -> (the schema it was compiled from, its validator); recompiled when a
#: reloaded catalog hands over a different schema object
_VALIDATORS: dict[tuple[str, str], tuple[Mapping[str, Any], jsonschema.protocols.Validator]] = {}


def resolve_command(st: state.ApiState, plugin: str, command: str) -> tuple[str, str]:
    """(plugin, command) if it can be called, else NotFound with the reason."""
    manifest = st.catalog.get(plugin)
    if manifest is None:
        raise errors.NotFound(f"plugin {plugin!r} not found", plugin=plugin)
    if not st.config.plugin(plugin).enabled:
        raise errors.NotFound(f"plugin {plugin!r} is disabled", plugin=plugin)
    if command not in manifest.commands:
        raise errors.NotFound(
            f"plugin {plugin!r} has no command {command!r}",
            plugin=plugin,
            command=command,
            commands=sorted(manifest.commands),
        )
    return plugin, command


def input_validator(plugin: str, spec: catalog_mod.Command) -> jsonschema.protocols.Validator | None:
    """The compiled validator of the command's input_schema (cached); None when any object goes."""
    schema = spec.input_schema
    if not schema:
        return None
    key = (plugin, spec.name)
    cached = _VALIDATORS.get(key)
    if cached is not None and cached[0] is schema:
        return cached[1]
    validator = jsonschema.validators.validator_for(schema)(schema)
    _VALIDATORS[key] = (schema, validator)
    return validator


def check_payload(plugin: str, spec: catalog_mod.Command, payload: dict[str, Any]) -> None:
    """400 listing `path: message` violations when `payload` does not match the input_schema."""
    validator = input_validator(plugin, spec)
    if validator is None or validator.is_valid(payload):  # the common case: no error list to build
        return
    found = sorted(validator.iter_errors(payload), key=lambda e: list(map(str, e.absolute_path)))
    if found:
        raise errors.BadRequest(
            f"payload does not match the input_schema of {plugin}.{spec.name}",
            violations=[f"{schemas.error_path(e)}: {e.message}" for e in found[:MAX_VIOLATIONS]],
        )


@routes.post("/plugin/{plugin}/{command}")
async def run_command(request: web.Request) -> web.Response:
    principal = auth.authenticate(request)
    auth.check(principal, "plugin:ro", "plugin:rw", narrow=("plugin:invoke:ro",))
    st = state.of(request)
    plugin, command = resolve_command(st, request.match_info["plugin"], request.match_info["command"])
    spec = st.catalog.plugins[plugin].commands[command]
    auth.check(principal, scopes.command_scope(spec.type))
    body = await bodies.json_object(request, extras_ignored=True, first_document=True)
    payload = bodies.payload(body)
    check_payload(plugin, spec, payload)
    event = {"type": "api.trigger", "payload": payload} if command == "handle" else None

    wait_s = wait_param(request)
    slots = request.app[pipelines.SYNC_SLOTS]
    if wait_s and slots.locked():
        raise errors.TooManyRequests(f"at most {st.config.api.max_concurrent_sync} synchronous requests at once")

    async def create(job_id: str) -> tuple[int, dict[str, Any]]:
        async def publish() -> None:
            await submit.submit_job(
                st,
                plugin=plugin,
                command=command,
                payload=payload,
                event=event,
                job_id=job_id,
                authority=auth.authority(principal),
            )

        accepted = {"job_id": job_id, "status": "queued", "plugin": plugin, "command": command}
        if not wait_s:
            await publish()
            return 202, accepted
        async with slots:
            started = time.monotonic()
            final = await job_waits.wait_final(st.bus, job_id, timeout_s=wait_s, before=publish)
            if final is None:
                return 202, {**accepted, "timeout_exceeded": True, "timeout_secs": wait_s}
            return 200, auth.results_for(principal, await _finished(st, final, accepted, started))

    return await idempotency.respond(request, principal, create)


def wait_param(request: web.Request) -> float:
    """Seconds of `?wait=` (0: do not wait)."""
    raw = request.query.get("wait")
    if raw is None or raw in ("", "false", "0"):
        return 0.0
    if raw == "true":
        return DEFAULT_WAIT_S
    try:
        wait_s = durations.parse_seconds(raw)
    except ValueError as exc:
        raise errors.BadRequest(f"wait: {exc}") from None
    if wait_s > MAX_WAIT_S:
        raise errors.BadRequest(f"wait: at most {int(MAX_WAIT_S)}s")
    return wait_s


async def _finished(
    st: state.ApiState, final: envelope.Envelope, accepted: dict[str, Any], started: float
) -> dict[str, Any]:
    """The waited job's answer from its final event."""
    data = final.data
    status = final.type.removeprefix("job.")
    result = data.get("result")
    if offload.is_pointer(result):
        result = await offload.resolve(st.bus, result)
    error = data.get("error") or data.get("reason") if status != "succeeded" else None
    return {
        **accepted,
        "status": "failed" if status == "rejected" else status,
        "attempt": data.get("attempt"),
        "duration_ms": int((time.monotonic() - started) * 1000),
        "result": result,
        "error": error,
    }

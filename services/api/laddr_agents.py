"""Laddr: GET /api/agents and GET /api/agents/{name}/chat.

An agent is `active` while a runner serving it has written `agent.<name>` to the `agents` KV
bucket within the last 3 heartbeat intervals (services/runner/heartbeat.py), else `stale`
(`last_seen` null when no runner ever served it). Chat submits an agent run with
`{"message": ...}` as its inputs; with wait=true (the default) it waits up to `timeout` seconds
(default 30) on the job's events and answers `completed` (or `failed`), else `timeout` while
the run goes on; wait=false answers `submitted` at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

import nats.errors
import orjson
from aiohttp import web

from services.api import auth, bodies, laddr_common, pipelines, state
from services.core import agents as agents_mod
from services.core import envelope, errors, job_waits, subjects
from services.runner import heartbeat

routes = web.RouteTableDef()

DEFAULT_CHAT_TIMEOUT_S = 30.0
MAX_CHAT_TIMEOUT_S = 600.0


async def presence(st: state.ApiState) -> dict[str, dict[str, Any]]:
    """Per configured agent: its last heartbeat record (missing when none)."""
    names = sorted(agents_mod.specs(st.config))
    try:
        kv = await st.bus.kv(subjects.KV_AGENTS)
    except (nats.errors.Error, TimeoutError) as exc:
        raise errors.TransientError(f"agents KV bucket unavailable: {exc}") from exc

    async def read(name: str) -> tuple[str, dict[str, Any] | None]:
        try:
            entry = await kv.get(heartbeat.agent_key(name))
        except nats.errors.Error:  # not found, deleted or expired: never seen (recently)
            return name, None
        try:
            record = orjson.loads(entry.value or b"{}")
        except orjson.JSONDecodeError:
            return name, None
        return name, record if isinstance(record, dict) else None

    found = await asyncio.gather(*(read(name) for name in names))
    return {name: record for name, record in found if record is not None}


def liveness(record: dict[str, Any] | None) -> tuple[str, str | None]:
    """(status, last_seen) of one agent."""
    if record is None:
        return "stale", None
    return ("active" if heartbeat.is_fresh(record, envelope.now()) else "stale"), record.get("last_seen")


@routes.get("/api/agents")
async def list_agents(request: web.Request) -> web.Response:
    auth.require(request, "jobs:ro")
    st = state.of(request)
    seen = await presence(st)
    out = []
    for name, spec in sorted(agents_mod.specs(st.config).items()):
        status, last_seen = liveness(seen.get(name))
        entry: dict[str, Any] = {
            "name": name, "role": spec.role, "goal": spec.goal, "status": status, "tools": list(spec.tools),
            "last_seen": last_seen, "provider": spec.llm.provider, "model": spec.llm.model,
            "offline": spec.llm.offline, "max_iterations": spec.max_iterations,
        }
        problems = agents_mod.problems(spec, st.catalog, st.config)
        if problems:
            entry["problems"] = problems
        out.append(entry)
    return web.json_response({"agents": out}, dumps=state.dumps)


def _timeout(request: web.Request) -> float:
    raw = request.query.get("timeout")
    if raw is None or raw == "":
        return DEFAULT_CHAT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        raise errors.BadRequest("query parameter 'timeout' must be a number of seconds", parameter="timeout") from None
    if not 0 < value <= MAX_CHAT_TIMEOUT_S:
        raise errors.BadRequest(f"query parameter 'timeout' must be between 0 and {MAX_CHAT_TIMEOUT_S:g} seconds",
                                parameter="timeout")
    return value


@routes.get("/api/agents/{agent_name}/chat")
async def chat(request: web.Request) -> web.Response:
    principal = auth.require(request, "jobs:ro")
    st = state.of(request)
    name = request.match_info["agent_name"]
    laddr_common.agent(st, name)
    message = request.query.get("message", "")
    if not message.strip():
        raise errors.BadRequest("query parameter 'message' is required", parameter="message")
    timeout_s = _timeout(request)
    wait = bodies.bool_param(request, "wait", default=True)
    job_id = envelope.new_id()

    async def submit() -> None:
        await laddr_common.submit_agent(st, name, {"message": message}, job_id=job_id, submitted_by="chat",
                                        authority=auth.authority(principal))

    if not wait:
        await submit()
        return web.json_response({"task_id": job_id, "status": "submitted", "agent": name}, status=202)
    slots = request.app[pipelines.SYNC_SLOTS]
    if slots.locked():
        raise errors.TooManyRequests(f"at most {st.config.api.max_concurrent_sync} waiting requests at once")
    async with slots:
        final = await job_waits.wait_final(st.bus, job_id, timeout_s=timeout_s, before=submit)
    if final is None:
        return web.json_response({"task_id": job_id, "status": "timeout", "agent": name,
                                  "message": f"Agent did not respond in time ({timeout_s:g}s); the task is still "
                                             "running"}, status=202)
    if final.type != "job.succeeded":
        return web.json_response({"task_id": job_id, "status": "failed", "agent": name,
                                  "error": final.data.get("error") or final.data.get("reason")})
    result = laddr_common.inner(await laddr_common.resolve(st, job_id, final.data.get("result")))
    answer = result.get("result") if isinstance(result, dict) and "result" in result else result
    return web.json_response({"task_id": job_id, "status": "completed", "result": answer, "agent": name,
                              "usage": result.get("usage") if isinstance(result, dict) else None},
                             dumps=state.dumps)

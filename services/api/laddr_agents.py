"""Laddr: GET /api/agents, GET /api/agents/{name}/tools and GET /api/agents/{name}/chat.

An agent is `active` while a runner serving it has written `agent.<name>` to the `agents` KV
bucket within the last 3 heartbeat intervals (services/runner/heartbeat.py), else `stale`
(`last_seen` null when no runner ever served it); `trace_count`/`last_executed` come from its
traces. Tools are the agent's configured tools with the command's expanded input_schema.

Chat reads Laddr's JSON body (sent on the GET) or the reference's query string (`message`,
`wait` default true, `timeout` seconds default 30; the body wins when it has `message`) and
submits an agent run with `{"message": ...}` as its inputs. With wait it waits up to `timeout`
(0: only an answer already there counts) on the job's events: `completed` once the run is over
(`result` = the answer, and Laddr's `response: {status: success|error, result, job_id,
prompt_id}`; a failed run is `completed` with `response.status: error`, as in Laddr), else
`timeout` while the run goes on; wait=false answers `submitted` at once.
"""

from __future__ import annotations

import asyncio
from typing import Any, NamedTuple

import nats.errors
import orjson
from aiohttp import web

from services.api import auth, bodies, laddr_common, pipelines, state, views
from services.api.jobs import fresh_job
from services.core import agents as agents_mod
from services.core import envelope, errors, job_waits, subjects
from services.runner import heartbeat, llm

routes = web.RouteTableDef()

DEFAULT_CHAT_TIMEOUT_S = 30.0
MAX_CHAT_TIMEOUT_S = 600.0
TRACE_STATS_SQL = "SELECT agent_name, count(*) AS n, max(timestamp) AS last FROM traces GROUP BY agent_name"


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
    traced = {r["agent_name"]: r for r in await st.pool.fetch(TRACE_STATS_SQL)}
    out = []
    for name, spec in sorted(agents_mod.specs(st.config).items()):
        status, last_seen = liveness(seen.get(name))
        stats = traced.get(name)
        entry: dict[str, Any] = {
            "name": name,
            "role": spec.role,
            "goal": spec.goal,
            "status": status,
            "tools": list(spec.tools),
            "last_seen": last_seen,
            "trace_count": int(stats["n"]) if stats else 0,
            "last_executed": views.timestamp(stats["last"]) if stats else None,
            "provider": spec.llm.provider,
            "model": spec.llm.model,
            "offline": spec.llm.offline,
            "max_iterations": spec.max_iterations,
        }
        problems = agents_mod.problems(spec, st.catalog, st.config)
        if problems:
            entry["problems"] = problems
        out.append(entry)
    return web.json_response({"agents": out}, dumps=state.dumps)


@routes.get("/api/agents/{agent_name}/tools")
async def agent_tools(request: web.Request) -> web.Response:
    """The agent's tools as its model sees them: `parameters` is the command's expanded input_schema."""
    auth.require(request, "jobs:ro")
    st = state.of(request)
    name = request.match_info["agent_name"]
    spec = agents_mod.specs(st.config).get(name)
    if spec is None:
        raise errors.NotFound(f"agent {name!r} not found", agent=name)
    tools = []
    for tool in spec.tools:
        plugin, _, command = tool.partition(".")
        manifest = st.catalog.get(plugin)
        found = manifest.commands.get(command) if manifest is not None else None
        entry = llm.tool_schema(
            agents_mod.function_name(tool), found.description if found else None, found.input_schema if found else None
        )["function"]
        tools.append(
            {
                "name": tool,
                "description": found.description or tool if found else f"Tool: {tool}",
                "parameters": entry["parameters"],
                "function": entry["name"],
                "available": found is not None,
            }
        )
    return web.json_response({"agent": name, "tools": tools}, dumps=state.dumps)


class ChatRequest(NamedTuple):
    message: str
    wait: bool
    timeout_s: float


async def _chat_request(request: web.Request) -> ChatRequest:
    """Laddr's JSON body (on a GET) or the reference's query string: the body wins when it is a JSON
    object with `message`; otherwise the query string's `message`; neither is a 400 naming `message`."""
    body: dict[str, Any] | None = None
    malformed: errors.BadRequest | None = None
    try:
        body = await bodies.json_object(request)
    except errors.BadRequest as exc:
        malformed = exc
    if body is not None and "message" in body:
        message = body["message"]
        if not isinstance(message, str):
            raise errors.BadRequest("'message' must be a string", field="message")
        wait = laddr_common.lax_bool(body["wait"], "wait") if body.get("wait") is not None else True
        return ChatRequest(
            message,
            wait,
            laddr_common.seconds(request, body, default=DEFAULT_CHAT_TIMEOUT_S, maximum=MAX_CHAT_TIMEOUT_S),
        )
    if request.query.get("message"):
        return ChatRequest(
            request.query["message"],
            bodies.bool_param(request, "wait", default=True),
            laddr_common.seconds(request, {}, default=DEFAULT_CHAT_TIMEOUT_S, maximum=MAX_CHAT_TIMEOUT_S),
        )
    if malformed is not None:
        raise malformed
    raise errors.BadRequest(
        "'message' is required: a JSON body {\"message\": ...} or the query parameter 'message'", field="message"
    )


def _reply(job_id: str, row: dict[str, Any] | None, whole: Any) -> dict[str, Any]:
    """Laddr's `response` of a finished chat: the agent's status word, its answer, the ids."""
    prompt_id = row.get("parent_job_id") if row and row.get("submitted_by") == "prompt" else job_id
    if row is not None and row["status"] == "succeeded":
        reply = {"status": "success", "result": laddr_common.answer(row, whole)}
    else:
        reply = {"status": "error", "result": None, "error": laddr_common.error_text(row) if row else None}
    return {**reply, "job_id": job_id, "prompt_id": prompt_id}


@routes.get("/api/agents/{agent_name}/chat")
async def chat(request: web.Request) -> web.Response:
    principal = auth.require(request, "jobs:ro")
    st = state.of(request)
    name = request.match_info["agent_name"]
    laddr_common.agent(st, name)
    asked = await _chat_request(request)
    job_id = envelope.new_id()

    async def submit() -> None:
        await laddr_common.submit_agent(
            st,
            name,
            {"message": asked.message},
            job_id=job_id,
            submitted_by="chat",
            authority=auth.authority(principal),
        )

    if not asked.wait:
        await submit()
        return web.json_response({"task_id": job_id, "status": "submitted", "agent": name}, status=202)
    slots = request.app[pipelines.SYNC_SLOTS]
    if slots.locked():
        raise errors.TooManyRequests(f"at most {st.config.api.max_concurrent_sync} waiting requests at once")
    async with slots:
        final = await job_waits.wait_final(st.bus, job_id, timeout_s=asked.timeout_s, before=submit)
    if final is None:
        return web.json_response(
            {
                "task_id": job_id,
                "status": "timeout",
                "agent": name,
                "message": "Agent did not respond in time",
                "timeout_s": asked.timeout_s,
                "hint": f"the task is still running; collect it from /api/responses/{job_id}/resolved",
            },
            status=202,
        )
    row = await fresh_job(st, job_id)
    whole = await laddr_common.result(st, row) if row is not None else None
    reply = _reply(job_id, row, whole)
    out: dict[str, Any] = {
        "task_id": job_id,
        "status": "completed",
        "result": reply["result"],
        "agent": name,
        "response": reply,
    }
    if reply["status"] == "error":
        out["error"] = reply.get("error")
    extra = laddr_common.details(row, whole) if row is not None else None
    if extra is not None and "usage" in extra:
        out["usage"] = extra["usage"]
    return web.json_response(out, dumps=state.dumps)

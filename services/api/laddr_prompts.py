"""Laddr: POST /api/prompts, GET /api/prompts, GET /api/prompts/{prompt_id}.

A prompt is a job with plugin "prompt" and command = its mode; the runner's prompt executor
(services/runner/prompts.py) runs its agents one after the other as child agent jobs, each one's
output being the next one's input. `single` runs one agent (`agents: [x]`, or `prompt_name`);
`sequential` runs `agents` (or just `prompt_name`). The first failing agent stops the chain and
the prompt's `error` names it. `outputs` is the last agent's answer (as Laddr stores it), the
chain's steps are beside it; `inputs` is required (an object), as in Laddr.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.api import auth, bodies, idempotency, laddr_common, state, submit, views
from services.api.jobs import fresh_job
from services.core import agents as agents_mod
from services.core import errors

routes = web.RouteTableDef()

LIST_SQL = """
SELECT job_id, plugin, command, status, payload, created_at, completed_at
FROM jobs WHERE plugin = 'prompt'
ORDER BY created_at DESC, job_id DESC LIMIT $1 OFFSET $2
"""
STEPS_SQL = """
SELECT job_id, command AS agent, status, last_error, created_at, completed_at
FROM jobs WHERE parent_job_id = $1 ORDER BY created_at, job_id
"""


def _chain(body: dict[str, Any]) -> tuple[str, str, list[str]]:
    """(prompt_name, mode, agents) of a POST body; 400 naming the field that is wrong."""
    mode = body.get("mode", "single")
    if mode not in agents_mod.PROMPT_MODES:
        raise errors.BadRequest(f"'mode' must be one of {', '.join(agents_mod.PROMPT_MODES)}", field="mode")
    name = body.get("prompt_name")
    chain = body.get("agents")
    if chain is not None and (not isinstance(chain, list) or not all(isinstance(a, str) and a for a in chain)):
        raise errors.BadRequest("'agents' must be a list of agent names", field="agents")
    if name is not None and (not isinstance(name, str) or not name):
        raise errors.BadRequest("'prompt_name' must be a non-empty string", field="prompt_name")
    if not chain:
        if not name:
            raise errors.BadRequest("'prompt_name' (an agent name) or 'agents' is required", field="prompt_name")
        chain = [name]
    if mode == "single" and len(chain) != 1:
        raise errors.BadRequest(
            "mode 'single' runs exactly one agent; use mode 'sequential' for a chain", field="agents"
        )
    return name or chain[0], mode, list(chain)


@routes.post("/api/prompts")
async def create_prompt(request: web.Request) -> web.Response:
    principal = auth.require(request, "jobs:rw")
    st = state.of(request)
    body = await bodies.json_object(request, required=True, extras_ignored=True)
    prompt_name, mode, chain = _chain(body)
    inputs = laddr_common.required_inputs(body, frozenset({"prompt_name", "mode", "agents"}))
    for name in chain:
        laddr_common.agent(st, name)  # 404 unknown, 409 misconfigured

    async def create(job_id: str) -> tuple[int, dict[str, Any]]:
        await submit.submit_job(
            st,
            plugin=agents_mod.PROMPT,
            command=mode,
            submitted_by="laddr",
            job_id=job_id,
            payload={"prompt_name": prompt_name, "inputs": inputs, "agents": chain},
            authority=auth.authority(principal),
        )
        return 202, {
            "prompt_id": job_id,
            "status": "running",
            "prompt_name": prompt_name,
            "agent": chain[0],
            "mode": mode,
            "agents": chain,
        }

    return await idempotency.respond(request, principal, create)


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    payload = row.get("payload") or {}
    return {
        "prompt_id": row["job_id"],
        "status": laddr_common.status(row),
        "prompt_name": payload.get("prompt_name") or row["command"],
        "mode": row["command"],
        "created_at": views.timestamp(row["created_at"]),
        "completed_at": views.timestamp(row.get("completed_at")),
    }


@routes.get("/api/prompts")
async def list_prompts(request: web.Request) -> web.Response:
    auth.require(request, "jobs:ro")
    st = state.of(request)
    limit, offset = laddr_common.page(request)
    rows = [dict(r) for r in await st.pool.fetch(LIST_SQL, limit, offset)]
    return web.json_response(
        {"prompts": [_summary(r) for r in rows], "limit": limit, "offset": offset}, dumps=state.dumps
    )


@routes.get("/api/prompts/{prompt_id}")
async def get_prompt(request: web.Request) -> web.Response:
    auth.require(request, "jobs:ro")
    st = state.of(request)
    prompt_id = request.match_info["prompt_id"]
    row = await fresh_job(st, prompt_id)
    if row is None or row["plugin"] != agents_mod.PROMPT:
        raise errors.NotFound(f"prompt {prompt_id!r} not found")
    payload = row.get("payload") or {}
    steps = [dict(r) for r in await st.pool.fetch(STEPS_SQL, prompt_id)]
    failed = next(
        (s for s in steps if laddr_common.STATUS.get(s["status"]) in ("failed", "cancelled", "skipped")), None
    )
    whole = await laddr_common.result(st, row)
    body = {
        **_summary(row),
        "agents": payload.get("agents") or [],
        "inputs": payload.get("inputs") or {},
        "outputs": laddr_common.outputs(row, whole),
        "error": laddr_common.error_text(row),
        "failed_agent": failed["agent"] if failed and row["status"] != "succeeded" else None,
        "steps": [
            {
                "agent": s["agent"],
                "job_id": s["job_id"],
                "status": laddr_common.status(s),
                "error": s.get("last_error") if s["status"] != "succeeded" else None,
            }
            for s in steps
        ],
        "token_usage": await laddr_common.token_usage(st, prompt_id),
    }
    extra = laddr_common.details(row, whole)
    if extra is not None:
        body["details"] = extra
    return web.json_response(body, dumps=state.dumps)

"""Laddr: POST/GET /api/jobs, GET /api/jobs/{id}, POST /api/jobs/{id}/replay.

`pipeline_name` names an agent (the job is an agent run: plugin "agent", command = the name) or,
failing that, a configured pipeline (a `pipeline.run` command, as POST /pipeline/{name} async).
GET /api/jobs lists root jobs (no parent: tool calls and prompt steps show in their tree).
Replay with `reexecute: true` (the default) submits the same plugin, command and inputs as a new
job that names the original (`original_job_id`); `reexecute: false` answers with the recorded
result and runs nothing.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.api import auth, bodies, idempotency, laddr_common, state, submit, views
from services.core import agents as agents_mod
from services.core import envelope, errors, scopes, subjects

routes = web.RouteTableDef()

FINAL = frozenset({"succeeded", "dead", "skipped", "cancelled"})
LIST_SQL = """
SELECT job_id, plugin, command, status, payload, created_at, completed_at
FROM jobs WHERE parent_job_id IS NULL
ORDER BY created_at DESC, job_id DESC LIMIT $1 OFFSET $2
"""


def _pipeline(st: state.ApiState, name: str) -> Any:
    return st.config.routes.get(name) if st.config.routes else None


@routes.post("/api/jobs")
async def create_job(request: web.Request) -> web.Response:
    principal = auth.require(request, "jobs:rw")
    st = state.of(request)
    body = await bodies.json_object(request, required=True, extras_ignored=True)
    name = body.get("pipeline_name")
    if not isinstance(name, str) or not name:
        raise errors.BadRequest("'pipeline_name' (an agent or pipeline name) is required", field="pipeline_name")
    inputs = bodies.payload(body, "inputs", known=frozenset({"pipeline_name"}))
    is_agent = name in agents_mod.specs(st.config)
    if is_agent:
        laddr_common.agent(st, name)  # 409 when its tools cannot run
    elif _pipeline(st, name) is None:
        raise errors.NotFound(f"no agent or pipeline named {name!r}", pipeline_name=name,
                              agents=sorted(agents_mod.specs(st.config)))
    else:
        auth.check(principal, scopes.PIPELINE)  # what POST /pipeline/{name} needs
    authority = auth.authority(principal)

    async def create(job_id: str) -> tuple[int, dict[str, Any]]:
        if is_agent:
            await laddr_common.submit_agent(st, name, inputs, job_id=job_id, submitted_by="laddr", authority=authority)
        else:
            cmd = envelope.make("pipeline.run", source=st.source, job_id=job_id, id=f"{job_id}:run",
                                correlation_id=job_id,
                                data={"pipeline": name, "payload": inputs, "submitted_by": "laddr",
                                      "authority": authority.to_data()})
            await st.bus.publish(subjects.pipeline_command(job_id), cmd)
        return 202, {"job_id": job_id, "status": "queued", "pipeline_name": name,
                     "created_at": views.timestamp(envelope.now())}

    return await idempotency.respond(request, principal, create)


@routes.get("/api/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    auth.require(request, "jobs:ro")
    st = state.of(request)
    limit, offset = bodies.page(request)
    rows = [dict(r) for r in await st.pool.fetch(LIST_SQL, limit, offset)]
    return web.json_response([
        {"job_id": r["job_id"], "pipeline_name": laddr_common.pipeline_name(r), "status": laddr_common.status(r),
         "created_at": views.timestamp(r["created_at"]), "completed_at": views.timestamp(r.get("completed_at"))}
        for r in rows
    ], dumps=state.dumps)


async def _existing(st: state.ApiState, job_id: str) -> dict[str, Any]:
    row = await laddr_common.fresh_job(st, job_id)
    if row is None:
        raise errors.NotFound(f"job {job_id!r} not found")
    return row


@routes.get("/api/jobs/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    auth.require(request, "jobs:ro")
    st = state.of(request)
    row = await _existing(st, request.match_info["job_id"])
    return web.json_response(await laddr_common.job_view(st, row), dumps=state.dumps)


@routes.post("/api/jobs/{job_id}/replay")
async def replay(request: web.Request) -> web.Response:
    principal = auth.require(request, "jobs:rw")
    st = state.of(request)
    row = await _existing(st, request.match_info["job_id"])
    body = await bodies.json_object(request)
    reexecute = body.get("reexecute", True)
    if not isinstance(reexecute, bool):
        raise errors.BadRequest("'reexecute' must be a boolean", field="reexecute")
    original = row["job_id"]
    if not reexecute:
        if row["status"] not in FINAL:
            raise errors.Conflict(f"job {original} is {row['status']}: there is no recorded result to replay yet",
                                  status=row["status"])
        return web.json_response({
            "job_id": original, "status": laddr_common.status(row), "result": await laddr_common.outputs(st, row),
            "error": row.get("last_error") if row["status"] != "succeeded" else None, "replayed": True,
            "reexecuted": False, "original_job_id": original,
        }, dumps=state.dumps)
    auth.check_work(principal, st.catalog, row["plugin"], row["command"])  # as running it directly would
    if row["plugin"] == agents_mod.AGENT:
        laddr_common.agent(st, row["command"])
    authority = auth.authority(principal)
    queued = await st.bus.last_message(subjects.EVENTS, subjects.job_event(original, "queued"))
    spec = queued[1].data if queued else row

    async def create(job_id: str) -> tuple[int, dict[str, Any]]:
        if row["plugin"] == "pipeline":
            cmd = envelope.make("pipeline.run", source=st.source, job_id=job_id, id=f"{job_id}:run",
                                correlation_id=job_id, data={"pipeline": row["command"], "payload": row.get("payload")
                                                             or {}, "submitted_by": "replay",
                                                             "original_job_id": original,
                                                             "authority": authority.to_data()})
            await st.bus.publish(subjects.pipeline_command(job_id), cmd)
        else:
            await submit.submit_job(st, plugin=row["plugin"], command=row["command"], payload=spec.get("payload") or {},
                                    event=spec.get("event"), context=spec.get("context"), submitted_by="replay",
                                    job_id=job_id, extra={"original_job_id": original}, authority=authority)
        return 202, {"job_id": job_id, "status": "queued", "result": None, "replayed": True, "reexecuted": True,
                     "original_job_id": original}

    return await idempotency.respond(request, principal, create)

"""Laddr: POST/GET /api/jobs, GET /api/jobs/{id}, POST /api/jobs/{id}/replay.

`pipeline_name` names an agent (the job is an agent run: plugin "agent", command = the name) or,
failing that, a configured pipeline (a `pipeline.run` command, as POST /pipeline/{name} async).
POST /api/jobs answers the reference's `{job_id, status: "queued", created_at}` at once; with
`?wait=true` or `"wait": true` it waits (holding one of the API's sync slots, up to `timeout`
seconds, default 300) and answers Laddr's synchronous `{job_id, status, result, error,
duration_ms, agent}` (a timed-out wait: the current state with `timeout: true`).
GET /api/jobs lists root jobs (no parent: tool calls and prompt steps show in their tree) as the
reference's bare array, or as Laddr's `{"jobs", "limit", "offset"}` with `api.laddr.jobs_list:
object` or `?format=object`.
Replay with no body, `{}` or `reexecute: false` answers with the recorded result (same job id)
and runs nothing; `reexecute: true` (or the reference's `request: true`) submits the same plugin,
command and inputs as a new job that names the original (`original_job_id`, in its submit
command). An unknown job is Laddr's 200 `{"status": "error", "error": "Job not found: <id>"}`.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from services.api import auth, bodies, idempotency, laddr_common, pipelines, state, submit, views
from services.api.jobs import fresh_job
from services.core import agents as agents_mod
from services.core import envelope, errors, job_waits, scopes, subjects

routes = web.RouteTableDef()

#: a waited POST /api/jobs gives up after this (`timeout` in the body or query string, seconds)
DEFAULT_WAIT_S = 300.0
MAX_WAIT_S = 3600.0
#: a pipeline's root job ends with job.failed (it has no retries of its own); an agent run's failed
#: attempt is followed by a retry or job.dead
PIPELINE_FINAL = job_waits.FINAL_TYPES | {"job.failed"}
LIST_SHAPES = ("array", "object")
LIST_SQL = """
SELECT job_id, plugin, command, status, payload, created_at, completed_at
FROM jobs WHERE parent_job_id IS NULL
ORDER BY created_at DESC, job_id DESC LIMIT $1 OFFSET $2
"""


def _pipeline(st: state.ApiState, name: str) -> Any:
    return st.config.routes.get(name) if st.config.routes else None


def _wait(request: web.Request, body: dict[str, Any]) -> tuple[bool, float]:
    """(wait, timeout_s) from `?wait=`/`?timeout=` or the body's `wait`/`timeout` (the body wins);
    `timeout` is read only for a wait (Laddr's model has neither field, so it ignores both)."""
    wait = bodies.bool_param(request, "wait", default=False)
    if body.get("wait") is not None:
        wait = laddr_common.lax_bool(body["wait"], "wait")
    if not wait:
        return False, DEFAULT_WAIT_S
    return True, laddr_common.seconds(request, body, default=DEFAULT_WAIT_S, maximum=MAX_WAIT_S)


def _job_request(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(pipeline_name, inputs) of a POST body: both required, a string and an object (as Laddr's model)."""
    name = body.get("pipeline_name")
    if "pipeline_name" not in body or name is None:
        raise errors.BadRequest("'pipeline_name' (an agent or pipeline name) is required", field="pipeline_name")
    if not isinstance(name, str) or not name:
        raise errors.BadRequest("'pipeline_name' must be a non-empty string", field="pipeline_name")
    return name, laddr_common.required_inputs(body, frozenset({"pipeline_name", "wait", "timeout"}))


@routes.post("/api/jobs")
async def create_job(request: web.Request) -> web.Response:
    principal = auth.require(request, "jobs:rw")
    st = state.of(request)
    body = await bodies.json_object(request, required=True, extras_ignored=True)
    name, inputs = _job_request(body)
    wait, timeout_s = _wait(request, body)
    is_agent = name in agents_mod.specs(st.config)
    if is_agent:
        laddr_common.agent(st, name)  # 409 when its tools cannot run
    elif _pipeline(st, name) is None:
        raise errors.NotFound(
            f"no agent or pipeline named {name!r}", pipeline_name=name, agents=sorted(agents_mod.specs(st.config))
        )
    else:
        auth.check(principal, scopes.PIPELINE)  # what POST /pipeline/{name} needs
    authority = auth.authority(principal)
    slots = request.app[pipelines.SYNC_SLOTS]
    if wait and slots.locked():
        raise errors.TooManyRequests(f"at most {st.config.api.max_concurrent_sync} waiting requests at once")

    async def submit_it(job_id: str) -> None:
        if is_agent:
            await laddr_common.submit_agent(st, name, inputs, job_id=job_id, submitted_by="laddr", authority=authority)
        else:
            cmd = envelope.make(
                "pipeline.run",
                source=st.source,
                job_id=job_id,
                id=f"{job_id}:run",
                correlation_id=job_id,
                data={"pipeline": name, "payload": inputs, "submitted_by": "laddr", "authority": authority.to_data()},
            )
            await st.bus.publish(subjects.pipeline_command(job_id), cmd)

    async def create(job_id: str) -> tuple[int, dict[str, Any]]:
        created_at = views.timestamp(envelope.now())
        if not wait:
            await submit_it(job_id)
            return 202, {"job_id": job_id, "status": "queued", "pipeline_name": name, "created_at": created_at}
        started = time.monotonic()
        async with slots:
            final = await job_waits.wait_final(
                st.bus,
                job_id,
                timeout_s=timeout_s,
                before=lambda: submit_it(job_id),
                final_types=job_waits.FINAL_TYPES if is_agent else PIPELINE_FINAL,
            )
        answer = await _finished(st, job_id, name, is_agent, created_at, started)
        if final is None:
            answer.update(timeout=True, message=f"The job did not finish within {timeout_s:g}s; it is still running")
            return 202, answer
        return 200, answer

    return await idempotency.respond(request, principal, create)


async def _finished(
    st: state.ApiState, job_id: str, name: str, is_agent: bool, created_at: str | None, started: float
) -> dict[str, Any]:
    """Laddr's synchronous answer: the job as it is now (final unless the wait timed out)."""
    row = await fresh_job(st, job_id)
    out: dict[str, Any] = {
        "job_id": job_id,
        "status": "queued",
        "result": None,
        "error": None,
        "duration_ms": int((time.monotonic() - started) * 1000),
        "agent": name if is_agent else None,
        "created_at": created_at,
        "pipeline_name": name,
    }
    if row is None:
        return out
    whole = await laddr_common.result(st, row)
    out.update(
        status=laddr_common.status(row),
        error=laddr_common.error_text(row),
        result=laddr_common.outputs(row, whole),
        created_at=views.timestamp(row.get("created_at")) or created_at,
        completed_at=views.timestamp(row.get("completed_at")),
    )
    extra = laddr_common.details(row, whole)
    if extra is not None:
        out["details"] = extra
    return out


@routes.get("/api/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    auth.require(request, "jobs:ro")
    st = state.of(request)
    limit, offset = laddr_common.page(request)
    shape = bodies.choice_param(request, "format", LIST_SHAPES) or st.config.api.laddr.jobs_list
    rows = [dict(r) for r in await st.pool.fetch(LIST_SQL, limit, offset)]
    items = [
        {
            "job_id": r["job_id"],
            "pipeline_name": laddr_common.pipeline_name(r),
            "status": laddr_common.status(r),
            "created_at": views.timestamp(r["created_at"]),
            "completed_at": views.timestamp(r.get("completed_at")),
        }
        for r in rows
    ]
    body: Any = {"jobs": items, "limit": limit, "offset": offset} if shape == "object" else items
    return web.json_response(body, dumps=state.dumps)


async def _existing(st: state.ApiState, job_id: str) -> dict[str, Any]:
    row = await fresh_job(st, job_id)
    if row is None:
        raise errors.NotFound(f"job {job_id!r} not found")
    return row


@routes.get("/api/jobs/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    auth.require(request, "jobs:ro")
    st = state.of(request)
    row = await _existing(st, request.match_info["job_id"])
    return web.json_response(await laddr_common.job_view(st, row), dumps=state.dumps)


def _reexecute(body: dict[str, Any]) -> bool:
    """Laddr's `reexecute` or the reference's `request`: either true re-executes; default false."""
    for field in ("reexecute", "request"):
        if field in body and body[field] is not None:
            if laddr_common.lax_bool(body[field], field):
                return True
    return False


def _not_found(job_id: str) -> web.Response:
    """Laddr answers a replay of an unknown job with 200 and `status: error` (its clients expect that)."""
    return web.json_response(
        {"status": "error", "error": f"Job not found: {job_id}", "detail": "Job not found", "code": "not_found"},
        dumps=state.dumps,
    )


@routes.post("/api/jobs/{job_id}/replay")
async def replay(request: web.Request) -> web.Response:
    principal = auth.require(request, "jobs:rw")
    st = state.of(request)
    body = await bodies.json_object(request, extras_ignored=True)  # other keys are ignored, as Laddr's model does
    reexecute = _reexecute(body)
    row = await fresh_job(st, request.match_info["job_id"])
    if row is None:
        return _not_found(request.match_info["job_id"])
    original = row["job_id"]
    if not reexecute:
        whole = await laddr_common.result(st, row)
        return web.json_response(
            {
                "job_id": original,
                "status": laddr_common.status(row),
                "result": laddr_common.outputs(row, whole),
                "error": laddr_common.error_text(row),
                "pipeline_name": laddr_common.pipeline_name(row),
                "created_at": views.timestamp(row.get("created_at")),
                "completed_at": views.timestamp(row.get("completed_at")),
                "replayed": True,
                "reexecuted": False,
                "original_job_id": original,
            },
            dumps=state.dumps,
        )
    auth.check_work(principal, st.catalog, row["plugin"], row["command"])  # as running it directly would
    if row["plugin"] == agents_mod.AGENT:
        laddr_common.agent(st, row["command"])
    authority = auth.authority(principal)
    queued = await st.bus.last_message(subjects.EVENTS, subjects.job_event(original, "queued"))
    spec = queued[1].data if queued else row

    async def create(job_id: str) -> tuple[int, dict[str, Any]]:
        if row["plugin"] == "pipeline":
            cmd = envelope.make(
                "pipeline.run",
                source=st.source,
                job_id=job_id,
                id=f"{job_id}:run",
                correlation_id=job_id,
                data={
                    "pipeline": row["command"],
                    "payload": row.get("payload") or {},
                    "submitted_by": "replay",
                    "original_job_id": original,
                    "authority": authority.to_data(),
                },
            )
            await st.bus.publish(subjects.pipeline_command(job_id), cmd)
        else:
            await submit.resubmit(
                st,
                row,
                spec,
                job_id=job_id,
                submitted_by="replay",
                extra={"original_job_id": original},
                authority=authority,
            )
        return 202, {
            "job_id": job_id,
            "status": "queued",
            "result": None,
            "error": None,
            "replayed": True,
            "reexecuted": True,
            "original_job_id": original,
            "pipeline_name": laddr_common.pipeline_name(row),
            "created_at": views.timestamp(envelope.now()),
            "completed_at": None,
        }

    return await idempotency.respond(request, principal, create)

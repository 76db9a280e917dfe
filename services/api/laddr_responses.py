"""Laddr: GET /api/responses/{task_id}/resolved — a job's result, fetched back from the object
store when it was offloaded (services/core/offload.py).

`offloaded` and `pointer` say where it was; `data` is the result: a plugin's `result`, or for an
agent run (a chat's task) Laddr's response `{status: success|error, result, job_id, prompt_id}`
with the run's details (agent, iterations, usage) beside them. Unknown task → 404; a pointer whose object is gone → 502. GET /job/{id} shows the
pointer itself, not the data: large results are fetched only here (and by /api/jobs/{id}).
"""

from __future__ import annotations

from aiohttp import web

from services.api import auth, laddr_common, state
from services.api.jobs import fresh_job
from services.core import errors, jobstate, offload

routes = web.RouteTableDef()


@routes.get("/api/responses/{task_id}/resolved")
async def resolved(request: web.Request) -> web.Response:
    auth.require(request, "jobs:ro")
    st = state.of(request)
    task_id = request.match_info["task_id"]
    row = await fresh_job(st, task_id)
    if row is None:
        raise errors.NotFound(f"task {task_id!r} not found")
    stored = row.get("result")
    pointer = stored["pointer"] if offload.is_pointer(stored) else None
    data = laddr_common.inner(await laddr_common.resolve(st, task_id, stored)) if stored is not None else None
    if laddr_common.is_run(row) and row["status"] in jobstate.FINAL_STATUSES:
        # Laddr's agent response: its status word, the answer, the ids (and our run details beside them)
        whole = data if isinstance(data, dict) else {"result": data}
        reply = {
            "status": "success" if row["status"] == "succeeded" else "error",
            "job_id": task_id,
            "prompt_id": row.get("parent_job_id") if row.get("submitted_by") == "prompt" else task_id,
        }
        if row["status"] != "succeeded":
            whole = {"result": None, "error": row.get("last_error")}
        data = {**whole, **reply}
    return web.json_response(
        {
            "task_id": task_id,
            "status": laddr_common.status(row),
            "offloaded": pointer is not None,
            "pointer": pointer,
            "data": data,
        },
        dumps=state.dumps,
    )

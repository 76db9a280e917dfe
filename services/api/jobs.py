"""GET /job/{job_id}: one job in the Ductile shape.

Read your writes: a job the projection has not reached yet is folded straight from its
events in the event log (or its submit command), so a GET right after the 202 never 404s; a row
that can still change (any but `SETTLED`: a failed attempt's row too, the dispatcher retries or
dead-letters it) is checked against the log too, so a GET right after a `?wait=` 200 (or a chat, or
any answer that saw the final event) never reads the older row. The cancel and retry routes decide
on the same `fresh_job`.
A folded job gets the read models' substitution (`values.for_postgres`), so it reads the same
before and after its row is written.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.api import auth, state, views
from services.core import errors, jobstate, subjects, values

routes = web.RouteTableDef()

#: the statuses a job's row never leaves; a failed or timed-out attempt is followed by the dispatcher's
#: retry or dead letter, so such a row may be older than the log (jobstate.FINAL_STATUSES counts them final)
SETTLED = frozenset({"succeeded", "dead", "skipped", "cancelled"})

JOB_ROW_SQL = """
SELECT job_id, plugin, command, status, submitted_by, payload, result, last_error, attempt, parent_job_id,
       correlation_id, pipeline, step_id, created_at, started_at, completed_at, last_seq
FROM jobs WHERE job_id = $1
"""


async def load_job(st: state.ApiState, job_id: str) -> dict[str, Any] | None:
    """The job row from Postgres, else folded from the event log, else None."""
    row = await st.pool.fetchrow(JOB_ROW_SQL, job_id)
    if row is not None:
        return dict(row)
    folded = await _fold_from_log(st, job_id)
    return values.for_postgres(folded) if folded is not None else None


async def fresh_job(st: state.ApiState, job_id: str) -> dict[str, Any] | None:
    """The job row, folded from the event log when the projection has not reached its outcome yet
    (a chat or a wait that saw the final event must not read an older row right after, nor the row of
    an attempt the dispatcher has retried since)."""
    row = await load_job(st, job_id)
    if row is None or row["status"] in SETTLED:
        return row
    folded = await fold_events(st, job_id)
    return folded if folded is not None and folded["last_seq"] > row.get("last_seq", 0) else row


async def fold_events(st: state.ApiState, job_id: str) -> dict[str, Any] | None:
    """The job folded from its events in the log, as its row will read (the read models' substitution applied)."""
    folded = jobstate.fold(await st.bus.history(subjects.EVENTS, subjects.job_events(job_id), limit=1000))
    return values.for_postgres(folded) if folded is not None else None


async def _fold_from_log(st: state.ApiState, job_id: str) -> dict[str, Any] | None:
    try:
        subjects.job_events(job_id)
    except ValueError:
        return None
    folded = await fold_events(st, job_id)
    if folded is not None:
        return folded
    for action in ("submit", "run"):  # a plugin job, or a pipeline's root
        submitted = await st.bus.last_message(subjects.COMMANDS, subjects.job_command(job_id, action))
        if submitted is not None:
            _, cmd = submitted
            data = (
                cmd.data
                if action == "submit"
                else {"plugin": "pipeline", "command": cmd.data.get("pipeline"), **cmd.data}
            )
            return jobstate.new_job_row(job_id, {**data, "created_at": cmd.time}, cmd)
    return None


@routes.get("/job/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    principal = auth.require(request, "jobs:ro", narrow=("jobs:status:ro",))
    job_id = request.match_info["job_id"]
    row = await fresh_job(state.of(request), job_id)
    if row is None:
        raise errors.NotFound(f"job {job_id!r} not found")
    return web.json_response(auth.results_for(principal, views.job(row)), dumps=state.dumps)

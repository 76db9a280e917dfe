"""POST /job/{id}/cancel and POST /job/{id}/retry (jobs:rw): commands about an existing job.

Cancel: a queued job never runs; a running one is signalled like a deadline. Retry: a job
that ended without success (dead, failed, timed_out, cancelled, skipped) is re-queued as a new
job linked to the original (`retry_of`), with the same plugin, command, payload and event.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.api import auth, idempotency, jobs, state, submit
from services.core import envelope, errors, subjects

routes = web.RouteTableDef()

#: a failed or timed-out attempt is always followed by the dispatcher's retry or dead letter
FINAL = frozenset({"succeeded", "dead", "skipped", "cancelled"})
RETRYABLE = frozenset({"dead", "failed", "timed_out", "cancelled", "skipped"})


async def _existing(request: web.Request) -> tuple[state.ApiState, dict[str, Any]]:
    st = state.of(request)
    job_id = request.match_info["job_id"]
    row = await jobs.fresh_job(st, job_id)  # as GET /job says: a lagging row must not decide 409 or 202
    if row is None:
        raise errors.NotFound(f"job {job_id!r} not found")
    return st, row


@routes.post("/job/{job_id}/cancel")
async def cancel(request: web.Request) -> web.Response:
    principal = auth.require(request, "jobs:rw")
    st, row = await _existing(request)
    if row["status"] in FINAL:
        raise errors.Conflict(f"job {row['job_id']} is already {row['status']}", status=row["status"])
    job_id = row["job_id"]
    cmd = envelope.make(
        "job.cancel",
        source=st.source,
        job_id=job_id,
        id=f"{job_id}:cancel",
        correlation_id=row.get("correlation_id") or job_id,
        data={"reason": f"cancelled via API ({principal.name or 'token'})"},
    )
    await st.bus.publish(subjects.job_command(job_id, "cancel"), cmd)
    return web.json_response({"job_id": job_id, "status": "cancelling", "previous_status": row["status"]}, status=202)


@routes.post("/job/{job_id}/retry")
async def retry(request: web.Request) -> web.Response:
    principal = auth.require(request, "jobs:rw")
    st, row = await _existing(request)
    if row["status"] not in RETRYABLE:
        raise errors.Conflict(
            f"job {row['job_id']} is {row['status']}; only jobs that ended without success "
            f"({', '.join(sorted(RETRYABLE))}) can be retried",
            status=row["status"],
        )
    auth.check_work(principal, st.catalog, row["plugin"], row["command"])  # as running it directly would
    original = row["job_id"]
    queued = await st.bus.last_message(subjects.EVENTS, subjects.job_event(original, "queued"))
    spec = queued[1].data if queued else row

    async def create(job_id: str) -> tuple[int, dict[str, Any]]:
        await submit.resubmit(
            st,
            row,
            spec,
            job_id=job_id,
            submitted_by="retry",
            extra={"retry_of": original},
            authority=auth.authority(principal),
        )
        return 202, {
            "job_id": job_id,
            "status": "queued",
            "retry_of": original,
            "plugin": row["plugin"],
            "command": row["command"],
        }

    return await idempotency.respond(request, principal, create)

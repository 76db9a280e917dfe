"""Laddr: POST /api/prompts/{prompt_id}/cancel — a real cancel of a prompt (or of any agent run: a
chat or batch task id works too, as Laddr's cancel flag does).

Like POST /job/{id}/cancel, it publishes `job.cancel`; the dispatcher decides (services/dispatcher/
cancels.py): a queued job is cancelled at once, a running one gets `job.cancel_requested` and a
signal to its runner, which stops the run and cancels its open child jobs (a prompt's running agent,
an agent's running tool jobs); the agent loop also checks the log between iterations
(services/runner/cancel_watch.py), so a lost signal still stops it. The prompt ends `cancelled`.

The answer is Laddr's, always 200 `{"ok": true, "prompt_id", "status": "canceled"}`, also for an
unknown id or a job already final (Laddr's answer; unlike Laddr, a completed prompt stays
completed: the cancel changes nothing that has ended). For a job that was still running the route
waits briefly (at most CANCEL_WAIT_S) for it to end, so a GET right after reads `cancelled` as with
Laddr, whose cancel writes the status at once. Laddr's `task_cancel_requested` trace (agent `api`,
`{"by": "user"}`) is recorded for a job that exists.
"""

from __future__ import annotations

from aiohttp import web

from services.api import auth, job_actions, jobs, state
from services.core import envelope, job_waits, subjects

routes = web.RouteTableDef()

CANCEL_WAIT_S = 5.0


@routes.post("/api/prompts/{prompt_id}/cancel")
async def cancel_prompt(request: web.Request) -> web.Response:
    principal = auth.require(request, "jobs:rw")
    st = state.of(request)
    prompt_id = request.match_info["prompt_id"]
    answer = web.json_response({"ok": True, "prompt_id": prompt_id, "status": "canceled"})
    row = await jobs.fresh_job(st, prompt_id)  # a lagging row of an ended job must not record a cancel
    if row is None or row["status"] in job_actions.FINAL:
        return answer
    correlation_id = row.get("correlation_id") or prompt_id
    trace = envelope.make(
        "trace.task_cancel_requested",
        source=st.source,
        job_id=prompt_id,
        id=f"{prompt_id}:cancel_requested_trace",
        correlation_id=correlation_id,
        data={
            "agent_name": "api",
            "attempt": row.get("attempt") or 1,
            "payload": {"by": "user", "principal": principal.name},
        },
    )
    cmd = envelope.make(
        "job.cancel",
        source=st.source,
        job_id=prompt_id,
        id=f"{prompt_id}:cancel",
        correlation_id=correlation_id,
        data={"reason": f"cancelled via API ({principal.name or 'token'})"},
    )

    async def publish() -> None:
        await st.bus.publish(subjects.trace_event(prompt_id, "task_cancel_requested"), trace)
        await st.bus.publish(subjects.job_command(prompt_id, "cancel"), cmd)

    await job_waits.wait_final(st.bus, prompt_id, timeout_s=CANCEL_WAIT_S, before=publish)
    return answer

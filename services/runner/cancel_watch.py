"""Has a cancel of this run been requested? The agent loop (services/runner/agents.py) calls
`stopped(run, iteration=...)` at the start of every iteration, and the prompt loop
(services/runner/prompts.py) before every step.

The usual path is the dispatcher's plain-NATS signal (`ctl.cancel.<job_id>`), which makes
`builtin.Runtime.execute` stop the run at once and cancel its open child jobs. That signal is
not stored: one sent while the runner was still claiming the attempt (between its preflight read
and its registration of the job) is lost. The dispatcher's `job.cancel_requested` event is
stored, so this check reads it from the log: one direct read per iteration. It decides nothing
(the dispatcher did); it stops the loop as the signal would, with a `task_cancelled` trace and a
`cancelled` outcome.
"""

from __future__ import annotations

from services.core import subjects
from services.runner import builtin, protocol, traces


async def requested(run: builtin.Run) -> bool:
    found = await run.bus.last_message(subjects.EVENTS, subjects.job_event(run.item.job_id, "cancel_requested"))
    return found is not None


async def stopped(run: builtin.Run, *, iteration: int) -> protocol.Outcome | None:
    """The `cancelled` outcome when a cancel was requested (its open children cancelled too), else None."""
    if not await requested(run):
        return None
    reason = "cancelled while running"
    await run.cancel_children(f"its parent {run.item.job_id} was cancelled")
    await run.tracer.emit("task_cancelled", {"reason": reason, "iteration": iteration, "ended_at": traces.now()})
    return protocol.Outcome(status="cancelled", error=reason, retry=False, duration_ms=run.elapsed_ms)

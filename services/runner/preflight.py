"""Before an attempt runs: is it still wanted? Reads the job's events and answers
"run", or "skip" with the events that record why.

- a cancel was requested → record `job.cancelled`, never run;
- a redelivered item (its runner died) whose attempt already has an outcome → skip (the
  outcome was stored, only the ack was lost): nothing runs twice;
- a redelivered item whose attempt started but never finished → record the attempt as
  lost (`job.failed`, retryable) and let the dispatcher decide the retry.
"""

from __future__ import annotations

from services.core import bus as bus_mod
from services.core import subjects
from services.runner import attempt

OUTCOMES = frozenset({"job.succeeded", "job.failed", "job.timed_out", "job.cancelled"})


async def check(bus: bus_mod.Bus, item: attempt.WorkItem, *, num_delivered: int, source: str,
                ) -> tuple[bool, attempt.Published]:
    """(run?, events to publish when not running)."""
    if await bus.last_message(subjects.EVENTS, subjects.job_event(item.job_id, "cancel_requested")):
        cancelled = await bus.last_message(subjects.EVENTS, subjects.job_event(item.job_id, "cancelled"))
        if cancelled:
            return False, []
        return False, [attempt.cancelled_event(item, reason="cancelled before it ran", source=source)]
    if num_delivered <= 1:
        return True, []
    started = False
    for _, env in await bus.history(subjects.EVENTS, subjects.job_events(item.job_id)):
        if int(env.data.get("attempt") or 0) != item.attempt:
            continue
        if env.type in OUTCOMES:
            return False, []
        if env.type == "job.started":
            started = True
    if not started:
        return True, []
    return False, [attempt.lost_event(item, source=source)]


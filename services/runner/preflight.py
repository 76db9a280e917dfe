"""Before an attempt runs: is it still wanted? Reads the job's events and answers
"run", or "skip" with the events that record why.

- a cancel was requested → record `job.cancelled`, never run;
- a redelivered item (its runner died) whose attempt already has an outcome → skip (the
  outcome was stored, only the ack was lost): nothing runs twice;
- a redelivered item whose attempt started but never finished → record the attempt as
  lost (`job.failed`, retryable) and let the dispatcher decide the retry;
- a first delivery of an attempt that already started → skip: it is a copy of a work item that
  was published again (a dispatcher re-deciding a redelivered submit after a nats-server restart
  made JetStream forget the original's id); the original delivery owns the attempt, and its own
  redelivery records it as lost if its runner died. The runner then claims the attempt by storing
  `job.started` before the plugin runs and backs off when that publish is a duplicate, which
  covers two copies that pass this check at the same moment.
"""

from __future__ import annotations

import asyncio

from services.core import bus as bus_mod
from services.core import subjects
from services.runner import attempt

OUTCOMES = frozenset({"job.succeeded", "job.failed", "job.timed_out", "job.cancelled"})


async def check(bus: bus_mod.Bus, item: attempt.WorkItem, *, num_delivered: int, source: str,
                ) -> tuple[bool, attempt.Published]:
    """(run?, events to publish when not running)."""
    cancel_requested, last_started = await asyncio.gather(
        bus.last_message(subjects.EVENTS, subjects.job_event(item.job_id, "cancel_requested")),
        bus.last_message(subjects.EVENTS, subjects.job_event(item.job_id, "started")),
    )
    if cancel_requested:
        cancelled = await bus.last_message(subjects.EVENTS, subjects.job_event(item.job_id, "cancelled"))
        if cancelled:
            return False, []
        return False, [attempt.cancelled_event(item, reason="cancelled before it ran", source=source)]
    if num_delivered <= 1:
        already = last_started is not None and int(last_started[1].data.get("attempt") or 0) >= item.attempt
        return not already, []
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


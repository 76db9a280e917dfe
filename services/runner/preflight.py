"""Before an attempt runs: is it still wanted? Reads the job's events and answers
"run", or "skip" with the events that record why.

- a cancel was requested → record `job.cancelled`, never run;
- a redelivered item (its runner died) whose attempt already has an outcome → skip (the
  outcome was stored, only the ack was lost): nothing runs twice;
- a redelivered item whose attempt started but never finished → record the attempt as
  lost (`job.failed`, retryable) and let the dispatcher decide the retry;
- a delivery of an attempt that another message already started (`job.started` records the
  WORK stream sequence of the message that claimed it) → skip: it is a copy of a work item that
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


async def check(
    bus: bus_mod.Bus, item: attempt.WorkItem, *, num_delivered: int, work_seq: int | None, source: str
) -> tuple[bool, attempt.Published]:
    """(run?, events to publish when not running). `work_seq` is the WORK stream sequence of this delivery's
    message: `job.started` records it, so a redelivery of the claiming message is told from a copy even when
    a restarted nats-server lost the consumer's delivery count."""
    cancel_requested, last_started = await asyncio.gather(
        bus.last_message(subjects.EVENTS, subjects.job_event(item.job_id, "cancel_requested")),
        bus.last_message(subjects.EVENTS, subjects.job_event(item.job_id, "started")),
    )
    if cancel_requested:
        cancelled = await bus.last_message(subjects.EVENTS, subjects.job_event(item.job_id, "cancelled"))
        if cancelled:
            return False, []
        return False, [attempt.cancelled_event(item, reason="cancelled before it ran", source=source)]
    started_attempt = int(last_started[1].data.get("attempt") or 0) if last_started is not None else 0
    if started_attempt > item.attempt:
        return False, []  # a later attempt already started: this one's fate was decided
    if started_attempt == item.attempt:
        assert last_started is not None
        claimed_by = last_started[1].data.get("work_seq")
        if claimed_by is not None and claimed_by != work_seq:
            return False, []  # a copy: the message that claimed the attempt owns it
        if claimed_by is None and num_delivered <= 1:
            return False, []  # (a start recorded without its message) a first delivery of a started attempt
        return await _redelivered(bus, item, source=source)
    if num_delivered <= 1:
        return True, []
    return await _redelivered(bus, item, source=source)


async def _redelivered(bus: bus_mod.Bus, item: attempt.WorkItem, *, source: str) -> tuple[bool, attempt.Published]:
    """The claiming message again: its outcome was stored (skip), or it started and never finished (lost)."""
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

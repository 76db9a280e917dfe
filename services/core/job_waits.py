"""Waiting for a job's final event: the runner (an agent waiting on its tool's child job, a prompt
waiting on an agent) and the API (chat with wait=true) call `wait_final`.

It listens on `evt.job.<id>.>` (core NATS) *before* running `before` (usually: publish the submit),
then reads the job's history in the EVENTS stream, so an outcome stored before the subscription
started is not missed; the history is re-read now and then in case a live message was.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg

from services.core import bus as bus_mod
from services.core import envelope, subjects

#: the events after which nothing more happens to a job (a failed attempt is followed by a retry or job.dead)
FINAL_TYPES = frozenset({"job.succeeded", "job.dead", "job.skipped", "job.cancelled", "job.rejected"})
RECHECK_S = 5.0


async def final_event(
    bus: bus_mod.Bus, job_id: str, final_types: frozenset[str] = FINAL_TYPES
) -> envelope.Envelope | None:
    """The job's final event from the stream, or None while it is not final."""
    for _, env in reversed(await bus.history(subjects.EVENTS, subjects.job_events(job_id))):
        if env.type in final_types:
            return env
    return None


async def wait_final(
    bus: bus_mod.Bus,
    job_id: str,
    *,
    timeout_s: float | None,
    before: Callable[[], Awaitable[object]] | None = None,
    final_types: frozenset[str] = FINAL_TYPES,
) -> envelope.Envelope | None:
    """The job's final event (one of `final_types`), or None when `timeout_s` passes first."""
    arrived: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_message(msg: Msg) -> None:
        arrived.put_nowait(msg.data)

    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    sub = await bus.nc.subscribe(subjects.job_events(job_id), cb=on_message)
    try:
        if before is not None:
            await before()
        while True:
            found = await final_event(bus, job_id, final_types)
            if found is not None:
                return found
            next_check = time.monotonic() + RECHECK_S
            while time.monotonic() < next_check:
                wait_s = next_check - time.monotonic()
                if deadline is not None:
                    wait_s = min(wait_s, deadline - time.monotonic())
                    if wait_s <= 0:
                        return None
                try:
                    raw = await asyncio.wait_for(arrived.get(), timeout=wait_s)
                except TimeoutError:
                    continue
                try:
                    env = envelope.decode(raw)
                except envelope.DecodeError:
                    continue
                if env.type in final_types:
                    return env
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()

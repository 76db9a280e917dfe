"""A live read of the event log for one long-lived client (the Laddr WebSockets of
services/api/laddr_ws.py): an ordered JetStream consumer on EVENTS from a start point (a stream
sequence, a time, or "what happens next"), filtered by subject on the server, read one message
at a time with the stream sequence and how many matching messages are still behind it.

As GET /events (services/api/events.py) it is ephemeral: the server drops the consumer
`RELEASE_AFTER_S` after the client stops reading, and `close` unsubscribes at once.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime
from typing import TypedDict

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext, api

from services.core import bus as bus_mod
from services.core import envelope, errors, subjects

PENDING_LIMIT = 10_000
RELEASE_AFTER_S = 2.0


class _Start(TypedDict, total=False):
    """Where the consumer starts: the ConsumerConfig fields that say so."""

    deliver_policy: api.DeliverPolicy
    opt_start_seq: int
    opt_start_time: datetime


@dataclass(frozen=True, slots=True)
class Item:
    seq: int
    env: envelope.Envelope
    #: matching messages stored after this one that the consumer has not delivered yet (0: caught up)
    pending: int


class Feed:
    """One ordered consumer; `next` answers the next matching event, or None after `timeout_s` idle."""

    def __init__(self, sub: JetStreamContext.PushSubscription) -> None:
        self._sub = sub

    @classmethod
    async def open(
        cls, bus: bus_mod.Bus, filters: list[str], *, start_seq: int | None = None, start_time: datetime | None = None
    ) -> Feed:
        """From stream sequence `start_seq` (inclusive), else from `start_time`, else from what comes next."""
        policy: _Start
        if start_seq is not None:
            policy = {"deliver_policy": api.DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": max(1, start_seq)}
        elif start_time is not None:
            policy = {"deliver_policy": api.DeliverPolicy.BY_START_TIME, "opt_start_time": start_time}
        else:
            policy = {"deliver_policy": api.DeliverPolicy.NEW}
        subject, many = (filters[0], None) if len(filters) == 1 else ("", list(filters))
        config = api.ConsumerConfig(filter_subjects=many, inactive_threshold=RELEASE_AFTER_S, **policy)
        try:
            sub = await bus.js.subscribe(
                subject, stream=subjects.EVENTS, ordered_consumer=True, config=config, pending_msgs_limit=PENDING_LIMIT
            )
        except (nats.errors.Error, TimeoutError) as exc:
            raise errors.ServiceUnavailable(f"cannot read the event log: {exc}") from exc
        return cls(sub)

    async def next(self, timeout_s: float) -> Item | None:
        while True:
            try:
                msg = await self._sub.next_msg(timeout=timeout_s)
            except (TimeoutError, nats.errors.TimeoutError):
                return None
            except nats.errors.Error as exc:
                raise errors.TransientError(f"the event log is unavailable: {exc}") from exc
            try:
                env = envelope.decode(msg.data)
            except envelope.DecodeError:
                continue
            meta = msg.metadata
            return Item(seq=int(meta.sequence.stream), env=env, pending=int(meta.num_pending or 0))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()


async def first_seq(bus: bus_mod.Bus, subject: str) -> int | None:
    """The stream sequence of the first message on `subject` in EVENTS, or None when there is none."""
    try:
        raw = await bus.js.get_msg(subjects.EVENTS, seq=1, subject=subject, next=True, direct=True)
    except nats.js.errors.NotFoundError:
        return None
    except (nats.errors.Error, TimeoutError) as exc:
        raise errors.ServiceUnavailable(f"cannot read the event log: {exc}") from exc
    return int(raw.seq) if raw.seq is not None else None

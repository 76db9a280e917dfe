"""Read the EVENTS stream in order from a given sequence, in batches: an ordered consumer
(no server-side state to clean up), used by the live projector and by rebuild. A message that is
not an envelope comes out as an `UNDECODABLE` stand-in, so nothing in the stream is passed over silently.
"""

from __future__ import annotations

import contextlib

import nats.errors
from nats.js import JetStreamContext, api

from services.core import bus as bus_mod
from services.core import envelope, logging, subjects

log = logging.get("stream_reader")


#: the type of the stand-in for a message of the stream that is not an envelope (projection records it)
UNDECODABLE = "projector.undecodable"


def undecodable(seq: int, subject: str, error: str) -> envelope.Envelope:
    """A stand-in for stream message `seq` that is not an envelope: no fold reads it, and
    `projection.apply_batch` records it in `projection_failures`, so the checkpoint moves past it."""
    return envelope.Envelope(
        id=f"seq:{seq}",
        type=UNDECODABLE,
        time="1970-01-01T00:00:00.000000Z",
        source="stream_reader",
        data={"subject": subject, "error": f"not an envelope: {error}"},
    )


class EventReader:
    """Batches of (stream seq, envelope) in stream order with none left out. A push consumer that falls
    behind drops messages client-side (a slow consumer), and the ordered consumer then resumes after
    them; so the reader checks that each message follows the one before it, and when one does not it
    re-subscribes from the first sequence it has not seen. The first message after a (re)subscribe may
    be past that sequence: the server starts at the next one it still holds."""

    def __init__(
        self, bus: bus_mod.Bus, *, start_seq: int, batch_size: int = 500, pending_msgs_limit: int = 100_000
    ) -> None:
        self.bus = bus
        self.pending_msgs_limit = pending_msgs_limit
        self.start_seq = max(1, start_seq)
        self.batch_size = batch_size
        self._sub: JetStreamContext.PushSubscription | None = None
        #: the stream seq the next message should have; None right after a (re)subscribe
        self._expected: int | None = None
        #: start_seq when an idle wait last found the stream past it (see `_check_tail`)
        self._idle_behind: int | None = None

    async def _subscribe(self) -> None:
        config = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self.start_seq)
        self._sub = await self.bus.js.subscribe(
            subjects.ALL_EVENTS,
            stream=subjects.EVENTS,
            ordered_consumer=True,
            config=config,
            pending_msgs_limit=self.pending_msgs_limit,
        )
        self._expected = None

    async def _unsubscribe(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def _check_tail(self) -> None:
        """Idle, yet the stream holds events past what was read: the dropped ones were the last, so no later
        message shows the gap. Seen twice in a row (not a message still on its way), read again from there."""
        last = await self.bus.stream_last_seq(subjects.EVENTS)
        if last < self.start_seq:
            self._idle_behind = None
            return
        if self._idle_behind == self.start_seq:
            log.warning("event_stream_tail_missed", expected=self.start_seq, last=last)
            await self._unsubscribe()
            await self._subscribe()
        self._idle_behind = self.start_seq

    async def __aenter__(self) -> EventReader:
        await self._subscribe()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._unsubscribe()

    async def next_batch(self, *, wait_s: float = 0.5) -> list[tuple[int, envelope.Envelope]]:
        """Up to `batch_size` events; [] when nothing arrived within `wait_s`."""
        sub = self._sub
        assert sub is not None
        out: list[tuple[int, envelope.Envelope]] = []
        try:
            msg = await sub.next_msg(timeout=wait_s)
        except (TimeoutError, nats.errors.TimeoutError):
            await self._check_tail()
            return out
        self._idle_behind = None
        while True:
            seq = msg.metadata.sequence.stream
            if self._expected is not None and seq != self._expected:
                if seq > self._expected:  # messages dropped on the way: read again from the first one missed
                    log.warning("event_stream_gap", expected=self._expected, got=seq)
                    await self._unsubscribe()
                    await self._subscribe()
                    return out or await self.next_batch(wait_s=wait_s)
                # already delivered (a redelivery after the ordered consumer reset): skip it
            else:
                try:
                    out.append((seq, envelope.decode(msg.data)))
                except envelope.DecodeError as exc:
                    log.error("event_undecodable", seq=seq, subject=msg.subject, error=str(exc))
                    out.append((seq, undecodable(seq, msg.subject, str(exc))))
                self._expected = seq + 1
                self.start_seq = seq + 1
            if len(out) >= self.batch_size or sub.pending_msgs == 0:
                break
            try:
                msg = await sub.next_msg(timeout=0.05)
            except (TimeoutError, nats.errors.TimeoutError):
                break
        return out

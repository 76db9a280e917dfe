"""Durable pull consumers: create-or-bind by name, and a fetch loop that hands batches to a
handler. A fetch timeout is normal ("nothing yet"); the handler acks what it finished.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from services.core import bus as bus_mod
from services.core import logging

log = logging.get("consumers")

BatchHandler = Callable[[list[Msg]], Awaitable[None]]


async def ensure_pull(
    bus: bus_mod.Bus,
    *,
    stream: str,
    durable: str,
    filter_subjects: list[str],
    ack_wait_s: float = 30.0,
    max_ack_pending: int = 1000,
    max_deliver: int = -1,
    deliver_policy: api.DeliverPolicy = api.DeliverPolicy.ALL,
) -> JetStreamContext.PullSubscription:
    """Create (or update) the durable pull consumer and bind to it."""
    config = api.ConsumerConfig(
        durable_name=durable,
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=ack_wait_s,
        max_ack_pending=max_ack_pending,
        max_deliver=max_deliver,
        deliver_policy=deliver_policy,
        filter_subject=filter_subjects[0] if len(filter_subjects) == 1 else None,
        filter_subjects=filter_subjects if len(filter_subjects) > 1 else None,
        max_waiting=512,
        num_replicas=bus.replicas if bus.replicas > 1 else None,
    )
    try:
        await bus.js.add_consumer(stream, config)
    except nats.js.errors.BadRequestError:
        # exists with other settings: update what may change
        await bus.js.add_consumer(stream, config)
    return await bus.js.pull_subscribe_bind(durable=durable, stream=stream)


async def redeliver_unacked(bus: bus_mod.Bus, *, stream: str, durable: str) -> None:
    """Hand out again at once what the consumer delivered and nobody acked (a dead process's batch) instead of
    after its ack_wait: a reset to the ack floor (ADR-60, nats-server 2.14+). Messages acked above the floor come
    again too; the handlers are idempotent. An older server refuses: those wait out their ack_wait."""
    try:
        await bus.js.reset_consumer(stream, durable)
    except (nats.errors.Error, TimeoutError) as exc:
        log.warning("consumer_reset_failed", stream=stream, consumer=durable, error=str(exc) or type(exc).__name__)


#: how long the second pull of fetch_ready may wait for messages the first one saw pending
DRAIN_S = 0.05


async def _first(sub: JetStreamContext.PullSubscription, timeout: float, stop: asyncio.Event | None) -> list[Msg]:
    """One pull of one message; when `stop` is set meanwhile, the pull is abandoned (a TimeoutError), so a
    stopping service does not wait out an idle pull. What the abandoned pull may still be handed is never
    acked, so it is redelivered after ack_wait, as when a fetch times out just before its message arrives."""
    if stop is None:
        return await sub.fetch(1, timeout=timeout)
    if stop.is_set():
        raise TimeoutError
    fetch = asyncio.ensure_future(sub.fetch(1, timeout=timeout))
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((fetch, stopped), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if fetch.done():
        return fetch.result()
    fetch.cancel()
    with contextlib.suppress(BaseException):
        await fetch
    raise TimeoutError


async def fetch_ready(
    sub: JetStreamContext.PullSubscription, batch: int, *, timeout: float, stop: asyncio.Event | None = None
) -> list[Msg]:
    """Up to `batch` messages, handed back as soon as one has arrived (a TimeoutError when none came within
    `timeout`, or when `stop` was set before one came). nats-py's fetch(n) waits out the rest of its timeout
    for the batch to fill once a lingering pull delivered a first message, which stalled a pickup by up to the
    whole timeout (~0.5 s, measured); so: pull one, then, when its metadata says more are pending, pull those
    without lingering."""
    first = await _first(sub, timeout, stop)
    pending = int(first[-1].metadata.num_pending or 0) if first else 0
    if batch <= 1 or pending <= 0:
        return first
    try:
        more = await sub.fetch(min(batch - 1, pending), timeout=DRAIN_S)
    except (TimeoutError, nats.errors.TimeoutError, nats.errors.Error):
        more = []  # taken by another process meanwhile, or the connection went: hand on what came
    return [*first, *more]


async def fetch_loop(
    sub: JetStreamContext.PullSubscription,
    handler: BatchHandler,
    stop: asyncio.Event,
    *,
    batch: int = 100,
    wait_s: float = 1.0,
    name: str,
) -> None:
    """Fetch batches until `stop` is set."""
    while not stop.is_set():
        try:
            msgs = await fetch_ready(sub, batch, timeout=wait_s, stop=stop)
        except (TimeoutError, nats.errors.TimeoutError):
            continue
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError):
            return
        except nats.errors.Error as exc:
            log.warning("fetch_failed", consumer=name, error=str(exc) or type(exc).__name__)
            await asyncio.sleep(0.5)
            continue
        try:
            await handler(msgs)
        except Exception:
            # Hand the unfinished batch back for a prompt redelivery (handlers are idempotent);
            # whatever the nak cannot reach is redelivered after ack_wait anyway.
            log.exception("batch_handler_failed", consumer=name, size=len(msgs))
            for msg in msgs:
                with contextlib.suppress(Exception):
                    await msg.nak(delay=0.5)
            await asyncio.sleep(0.5)

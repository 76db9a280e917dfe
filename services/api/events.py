"""GET /events (events:ro; `?token=` for browsers): the event log as server-sent events, live.

    id:    the EVENTS stream sequence        event: Ductile's event name       data: Ductile's flat data

That default speaks Ductile's hub events (`job.enqueued`, `job.completed`, ...; the mapping is
services/api/ductile_events.py); `?format=log` sends the whole event log as it is stored instead:
`event:` the envelope's type, `data:` the envelope (JSON).

Without `Last-Event-ID` (header, or `?last_event_id=`) a `log` stream starts with what happens after
the request, a Ductile one with the last `REPLAY` messages of the log (Ductile's hub replays its
ring buffer on connect); with it, right after that sequence — so a reconnecting EventSource misses nothing.
`?type=` keeps one type (the name as sent: `job.completed`, or `job.succeeded` with format=log) or a family (`job.`, `job.*`); `?job_id=` keeps one
job's events (its `evt.job.<id>.*` and `evt.trace.<id>.*`). Comments (`: ping`) every
`?heartbeat=` seconds (default 15) keep proxies from closing an idle stream.

Each request reads through its own ordered consumer (no server-side state outlives it); it
is unsubscribed as soon as the client goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import nats.errors
from aiohttp import web
from aiohttp_sse import sse_response
from nats.js import api

from services.api import auth, bodies, ductile_events, state
from services.core import envelope, errors, logging, subjects

routes = web.RouteTableDef()
log = logging.get("api.events")

#: `ductile` (default): Ductile's event names and flat data (services/api/ductile_events.py); `log`: the envelopes
FORMATS = ("ductile", "log")
#: without Last-Event-ID a `ductile` stream starts with the last this many messages of the log, as
#: Ductile's hub replays its 256-event ring buffer; a `log` stream starts with what happens next
REPLAY = 256
DEFAULT_HEARTBEAT_S = 15
#: how often the loop looks whether the client is still there while nothing happens
IDLE_CHECK_S = 0.5
PENDING_LIMIT = 10_000
#: the server drops a stream's (ephemeral) consumer this long after its client went away
RELEASE_AFTER_S = 2.0
#: set when the app shuts down: open streams end at once instead of holding the shutdown up
STOPPING = web.AppKey("events_stopping", asyncio.Event)


def setup(app: web.Application) -> None:
    """Register the shutdown hook that ends every open stream (call from create_app)."""
    app[STOPPING] = asyncio.Event()

    async def on_shutdown(app: web.Application) -> None:
        app[STOPPING].set()

    app.on_shutdown.append(on_shutdown)


def _plain(token: str) -> bool:
    """Safe as one subject token (no dots, wildcards, spaces or anything else NATS treats specially)."""
    return bool(token) and all(c.isalnum() or c in "_-" for c in token)


@dataclass(frozen=True, slots=True)
class Filter:
    type: str | None = None
    prefix: bool = False
    job_id: str | None = None

    @classmethod
    def from_request(cls, request: web.Request) -> Filter:
        raw_type = request.query.get("type") or None
        prefix = False
        if raw_type is not None:
            if raw_type.endswith(".*") or raw_type.endswith("*"):
                raw_type, prefix = raw_type.rstrip("*"), True
            prefix = prefix or raw_type.endswith(".")
        job_id = request.query.get("job_id") or None
        if job_id is not None:
            try:
                subjects.job_events(job_id)
            except ValueError:
                raise errors.BadRequest("query parameter 'job_id' is not a valid job id", parameter="job_id") from None
        return cls(type=raw_type, prefix=prefix, job_id=job_id)

    def subject(self, *, by_type: bool = True) -> str:
        """The narrowest subject filter the server can apply (the rest is `admits`). `by_type` False:
        the type filter names Ductile's events, which are not the subjects' types."""
        if self.job_id is not None:
            return f"evt.*.{self.job_id}.>"
        if self.type is not None and by_type:
            family, _, short = self.type.partition(".")
            if family in ("job", "trace") and short and not self.prefix and _plain(short):
                return f"evt.{family}.*.{short}"
            if _plain(family) and (short or self.prefix):
                return f"evt.{family}.>"
        return subjects.ALL_EVENTS

    def admits(self, env: envelope.Envelope, name: str | None = None) -> bool:
        """Whether the event passes; `name` is the type it is sent under (default: the envelope's)."""
        name = env.type if name is None else name
        if self.type is not None:
            if self.prefix and not name.startswith(self.type):
                return False
            if not self.prefix and name != self.type:
                return False
        return self.job_id is None or env.job_id == self.job_id


def _last_event_id(request: web.Request) -> int | None:
    raw = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    if raw is None or raw.strip() == "":
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        raise errors.BadRequest("Last-Event-ID must be a stream sequence (an integer)") from None
    if value < 0:
        raise errors.BadRequest("Last-Event-ID must be >= 0")
    return value


def _gone(request: web.Request) -> bool:
    """The client went away, or the app is shutting down."""
    transport = request.transport
    stopping = request.app.get(STOPPING)
    return transport is None or transport.is_closing() or (stopping is not None and stopping.is_set())


@routes.get("/events")
async def stream_events(request: web.Request) -> web.StreamResponse:
    auth.require(request, "events:ro", allow_query=True)
    st = state.of(request)
    selected = Filter.from_request(request)
    log_format = bodies.choice_param(request, "format", FORMATS) == "log"
    after = _last_event_id(request)
    heartbeat = bodies.int_param(request, "heartbeat", default=DEFAULT_HEARTBEAT_S, minimum=1, maximum=300)
    if after is None and not log_format:
        # Ductile's hub replays its ring buffer (256 events) to a new client before going live
        after = max(0, await st.bus.stream_last_seq(subjects.EVENTS) - REPLAY)
    if after is None:
        config = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.NEW, inactive_threshold=RELEASE_AFTER_S)
    else:
        config = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=after + 1,
            inactive_threshold=RELEASE_AFTER_S,
        )
    # subscribe before answering: whatever happens once the client has our headers is in the stream
    try:
        sub = await st.bus.js.subscribe(
            selected.subject(by_type=log_format),
            stream=subjects.EVENTS,
            ordered_consumer=True,
            config=config,
            pending_msgs_limit=PENDING_LIMIT,
        )
    except (nats.errors.Error, TimeoutError) as exc:
        raise errors.ServiceUnavailable(f"cannot read the event log: {exc}") from exc
    sent = 0
    response: web.StreamResponse | None = None
    try:
        async with sse_response(request, ping_interval=heartbeat) as resp:
            response = resp
            while resp.is_connected() and not _gone(request):
                try:
                    msg = await sub.next_msg(timeout=IDLE_CHECK_S)
                except (TimeoutError, nats.errors.TimeoutError):
                    continue
                try:
                    env = envelope.decode(msg.data)
                except envelope.DecodeError:
                    continue
                seq = str(msg.metadata.sequence.stream)
                if log_format:
                    if selected.admits(env):
                        await resp.send(msg.data.decode(), id=seq, event=env.type)
                        sent += 1
                    continue
                name, data = ductile_events.translate(env)
                if not selected.admits(env, name):
                    continue
                await resp.send(state.dumps(data), id=seq, event=name)
                sent += 1
    except (ConnectionResetError, nats.errors.ConnectionClosedError):
        pass
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        log.debug("sse_closed", sent=sent)
    return response if response is not None else web.Response(status=204)

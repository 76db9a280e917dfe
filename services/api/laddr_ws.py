"""Laddr's WebSockets, fed from the event log (an ordered consumer each, services/api/event_feed.py):

    /ws/events                  every trace once, as `{"type":"trace","data":{job_id,agent_name,event_type,
                                timestamp}}`, starting with the traces of the last REPLAY_S seconds (Laddr
                                shows what is recent on connect). Laddr's throttle: a trace goes out at once
                                when THROTTLE_S have passed since the last message, else it is held and sent
                                with the next ones as `{"type":"batch","events":[...]}` (at BATCH_SIZE, or
                                when THROTTLE_S have passed: nothing waits for more traces to arrive)
    /ws/prompts/{prompt_id}     `{"type":"traces","data":{"spans":[...],"count":n}}` with every trace of the
                                prompt's job tree so far (its agents' jobs included; spans nested by
                                `parent_id`, services/api/laddr_spans.py), then one such message per batch
                                of new traces, then at the job's final event (whatever its status: Laddr
                                forgets `incomplete`) `{"type":"complete","data":{status,outputs,error,spans}}`
                                with the whole tree, and a normal close. Any job id works; an id that does
                                not exist (yet) gets the empty first message and waits for it
    /ws/batches/{batch_id}      `{"type":"traces","data":{"spans":[...],"count":n}}` as Laddr's: raw trace rows
                                of the batch's jobs (a row under its parent's `children` when both are in the
                                message), the ones so far first (also when there are none), then each batch
                                of new ones; the batch's membership is read from its `batch.tasks_added`
                                events (services/core/batches.py), so tasks added later are followed too.
                                Never `complete` (as Laddr): the client closes. An unknown batch: a close
                                (1000, reason "Batch not found") and no message
    /ws/logs/{container_name}   Laddr without the Docker SDK: `{"type":"error","data":{"error":...}}`, close

Authentication is Laddr's WebSocket order — `?api_key=`, then `X-API-Key`, then `Authorization:
Bearer` (the first one present is the only one that counts) — and Headrace's `?token=` (as GET /events),
against the API tokens; the token needs `jobs:ro`. A refused handshake is HTTP 403 before the upgrade,
as Laddr under uvicorn; a plain HTTP request (no upgrade) gets 401/403 as any route, or 426 when
authorized. Open sockets hold the token's `api.limits.sse_per_token` stream slots with GET /events
(429 before the upgrade when they are all taken).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from aiohttp import WSCloseCode, web

from services.api import auth, event_feed, events, laddr_common, laddr_spans, limits, state
from services.core import batches, envelope, errors, job_waits, jobstate, logging, subjects
from services.core import bus as bus_mod
from services.core import config as config_mod

routes = web.RouteTableDef()
log = logging.get("api.laddr_ws")

SCOPE = "jobs:ro"
REFUSED = "Invalid or missing API key"
#: /ws/events starts with the traces of this many seconds before the connect (Laddr's window)
REPLAY_S = 5.0
#: Laddr's EventThrottler: at most one message per THROTTLE_S unless BATCH_SIZE traces are held
THROTTLE_S = 0.1
BATCH_SIZE = 5
#: how long a read waits before the loop looks whether the client is still there
IDLE_S = 0.5
#: at most this many traces in one `traces` increment of /ws/prompts
INCREMENT_MAX = 500
HEARTBEAT_S = 30.0
TRACE_FILTER = "evt.trace.>"
#: a prompt's tree grows by job.queued events (`parent_job_id`); its traces are trace events
TREE_FILTERS = ["evt.job.>", TRACE_FILTER]
#: a batch's membership: `evt.batch.<id>.tasks_added` events listing `tasks[].job_id`
BATCH_EVENT = batches.EVENT_TYPE
LOGS_UNAVAILABLE = (
    "Docker SDK not available: Headrace runs no containers; job output is at GET /job-logs and in each job's result"
)


# --- the handshake ---------------------------------------------------------------------------------


def presented_key(request: web.Request) -> str | None:
    """The credential Laddr's `verify_websocket_api_key` reads (query, X-API-Key, Bearer), else `?token=`."""
    for value in (request.query.get("api_key"), request.headers.get("X-API-Key")):
        if value:
            return value
    return auth.presented_token(request, allow_query=True)


def wants_upgrade(request: web.Request) -> bool:
    return web.WebSocketResponse().can_prepare(request).ok


def principal_of(request: web.Request) -> config_mod.Token:
    """The token of a WebSocket request: 403 refuses a handshake (401 over plain HTTP), 403 without the scope.
    Without any credential `auth.authenticate` decides (a deployment may admit keyless Laddr clients)."""
    key = presented_key(request)
    principal: config_mod.Token | None
    if key:
        principal = request.app[auth.TABLE].find(key)
    else:
        try:
            principal = auth.authenticate(request)
        except errors.Unauthorized:
            principal = None
    if principal is None:
        if wants_upgrade(request):
            raise errors.Forbidden(REFUSED)
        raise errors.Unauthorized(REFUSED)
    auth.check(principal, SCOPE)
    return principal


def slot_key(request: web.Request, principal: config_mod.Token) -> str:
    """Whose stream slots a socket takes: its token's (shared with GET /events), or its address when it
    came without a credential (a keyless deployment: clients must not share one pool)."""
    return limits.token_key(principal) if presented_key(request) else f"addr:{request.remote}"


class Socket:
    """An accepted WebSocket: JSON out, and a reader that notices the client leaving."""

    def __init__(self, request: web.Request, ws: web.WebSocketResponse) -> None:
        self.request = request
        self.ws = ws
        self.sent = 0
        self._reader = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        async for _ in self.ws:  # Laddr's sockets ignore what the client sends; this answers pings and closes
            pass

    @property
    def gone(self) -> bool:
        stopping = self.request.app.get(events.STOPPING)
        return self.ws.closed or self._reader.done() or (stopping is not None and stopping.is_set())

    async def send(self, message: dict[str, Any]) -> bool:
        if self.gone:
            return False
        try:
            await self.ws.send_str(state.dumps(message))
        except (ConnectionResetError, RuntimeError):
            return False
        self.sent += 1
        return True

    async def close(self, code: int = WSCloseCode.OK) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close(code=code)
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader


@contextlib.asynccontextmanager
async def accepted(request: web.Request, principal: config_mod.Token) -> AsyncIterator[Socket]:
    """Take one of the token's stream slots (429 when none is free), upgrade, hold the slot until the end.
    A failure after the upgrade (the event log unavailable...) becomes Laddr's `{"type":"error"}` message and
    an error close (1011)."""
    cap = state.of(request).config.api.limits.sse_per_token
    with request.app[limits.STREAMS].hold(slot_key(request, principal), cap) as free:
        if not free:  # GET /events's answer (services/api/limits.py)
            raise web.HTTPTooManyRequests(
                text=state.dumps(
                    {
                        "error": f"this token already holds {cap} open event streams "
                        "(api.limits.sse_per_token); close one first",
                        "code": "too_many_streams",
                        "retry_after": 1,
                        "limit": cap,
                    }
                ),
                content_type="application/json",
                headers={"Retry-After": "1"},
            )
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S)
        await ws.prepare(request)
        sock = Socket(request, ws)
        try:
            yield sock
        except errors.HeadraceError as exc:  # the event log or the object store went away mid-stream
            log.warning("ws_failed", path=request.path, error=exc.message)
            await sock.send({"type": "error", "data": {"error": exc.message}})
            await sock.close(WSCloseCode.INTERNAL_ERROR)
        finally:
            await sock.close()
            log.debug("ws_closed", path=request.path, sent=sock.sent)


def upgrade_required(request: web.Request) -> web.Response:
    """426 for an authorized plain HTTP request to a WebSocket route."""
    return web.json_response(
        {
            "error": f"{request.path} is a WebSocket: connect with an Upgrade: websocket request",
            "code": "upgrade_required",
        },
        status=426,
        headers={"Upgrade": "websocket", "Connection": "Upgrade"},
        dumps=state.dumps,
    )


# --- /ws/events ------------------------------------------------------------------------------------


class Throttle:
    """Laddr's EventThrottler without its stuck buffer: what is held goes out THROTTLE_S after the last send."""

    def __init__(self) -> None:
        self.last = float("-inf")
        self.held: list[dict[str, Any]] = []

    def add(self, message: dict[str, Any], now: float) -> list[dict[str, Any]]:
        if not self.held and now - self.last >= THROTTLE_S:
            self.last = now
            return [message]
        self.held.append(message)
        return [self._flush(now)] if len(self.held) >= BATCH_SIZE else []

    def due(self, now: float) -> list[dict[str, Any]]:
        return [self._flush(now)] if self.held and now - self.last >= THROTTLE_S else []

    def wait_s(self, now: float) -> float:
        return max(0.01, THROTTLE_S - (now - self.last)) if self.held else IDLE_S

    def _flush(self, now: float) -> dict[str, Any]:
        held, self.held, self.last = self.held, [], now
        return held[0] if len(held) == 1 else {"type": "batch", "events": held}


@routes.get("/ws/events", allow_head=False)
async def ws_events(request: web.Request) -> web.StreamResponse:
    principal = principal_of(request)
    if not wants_upgrade(request):
        return upgrade_required(request)
    st = state.of(request)
    feed = await event_feed.Feed.open(st.bus, [TRACE_FILTER], start_time=envelope.now() - timedelta(seconds=REPLAY_S))
    rows = laddr_spans.Traces()
    throttle = Throttle()
    try:
        async with accepted(request, principal) as sock:
            while not sock.gone:
                item = await feed.next(throttle.wait_s(time.monotonic()))
                out: list[dict[str, Any]] = []
                if item is not None and (row := rows.add(item.seq, item.env, remember=False)) is not None:
                    out = throttle.add(laddr_spans.event_summary(row), time.monotonic())
                out += throttle.due(time.monotonic())
                for message in out:
                    await sock.send(message)
            return sock.ws
    finally:
        await feed.close()


# --- /ws/prompts/{prompt_id} -------------------------------------------------------------------------


class PromptTree:
    """One job tree as the log tells it: the root's row (folded), its jobs, their traces."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.jobs = {root}
        self.row: dict[str, Any] | None = None
        self.final = False
        self.traces = laddr_spans.Traces()
        self.rows: list[dict[str, Any]] = []

    def take(self, item: event_feed.Item) -> dict[str, Any] | None:
        """Apply one event; the trace row when it is a trace of the tree."""
        env = item.env
        if env.type.startswith("job.") and env.job_id is not None:
            if env.job_id not in self.jobs and env.data.get("parent_job_id") in self.jobs:
                self.jobs.add(env.job_id)
            if env.job_id == self.root and not self.final:
                self.row = jobstate.evolve_job(self.row, item.seq, env)
                self.final = env.type in job_waits.FINAL_TYPES
            return None
        if env.job_id not in self.jobs:
            return None
        row = self.traces.add(item.seq, env)
        if row is not None:
            self.rows.append(row)
        return row

    async def complete(self, st: state.ApiState) -> dict[str, Any]:
        row = self.row
        assert row is not None
        return {
            "type": "complete",
            "data": {
                "status": laddr_common.status(row),
                "outputs": laddr_common.outputs(row, await laddr_common.result(st, row)),
                "error": laddr_common.error_text(row),
                "spans": self.traces.tree(self.rows),
            },
        }


def traces_message(tree: PromptTree, rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "traces", "data": {"spans": tree.traces.tree(rows), "count": len(rows)}}


def _valid_id(job_id: str) -> bool:
    try:
        subjects.job_events(job_id)
    except ValueError:
        return False
    return True


@routes.get("/ws/prompts/{prompt_id}", allow_head=False)
async def ws_prompt(request: web.Request) -> web.StreamResponse:
    principal = principal_of(request)
    if not wants_upgrade(request):
        return upgrade_required(request)
    st = state.of(request)
    root = request.match_info["prompt_id"]
    tree = PromptTree(root)
    # the log up to `last` is the first message; the job's first event is where its story starts
    last = await st.bus.stream_last_seq(subjects.EVENTS)
    start = await event_feed.first_seq(st.bus, subjects.job_events(root)) if _valid_id(root) else None
    feed = await event_feed.Feed.open(st.bus, TREE_FILTERS, start_seq=start if start is not None else last + 1)
    try:
        async with accepted(request, principal) as sock:
            if start is not None:
                while not sock.gone:
                    item = await feed.next(IDLE_S)
                    if item is None:
                        break
                    tree.take(item)
                    if item.pending == 0 or item.seq >= last or tree.final:
                        break
            await sock.send(traces_message(tree, tree.rows))
            fresh: list[dict[str, Any]] = []
            while not tree.final and not sock.gone:
                item = await feed.next(IDLE_S)
                if item is not None and (row := tree.take(item)) is not None:
                    fresh.append(row)
                if fresh and (item is None or item.pending == 0 or len(fresh) >= INCREMENT_MAX or tree.final):
                    await sock.send(traces_message(tree, fresh))
                    fresh = []
            if tree.final:
                await sock.send(await tree.complete(st))
            return sock.ws
    finally:
        await feed.close()


# --- /ws/batches/{batch_id} -------------------------------------------------------------------------


def batch_events(batch_id: str) -> str | None:
    """The subject filter of a batch's events; None for an id that cannot be one."""
    return f"evt.batch.{batch_id}.>" if _valid_id(batch_id) else None  # subjects.batch_event, any type


def nested_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Laddr's batch tree: the raw rows, each under its parent's `children` when the parent is among them."""
    copies = {row["id"]: dict(row) for row in rows}
    roots = []
    for row in sorted(copies.values(), key=lambda r: r["id"]):
        parent = copies.get(row["parent_id"]) if row["parent_id"] is not None and row["parent_id"] < row["id"] else None
        if parent is not None:
            parent.setdefault("children", []).append(row)
        else:
            roots.append(row)
    return roots


class BatchJobs:
    """A batch's member jobs as its events add them, and their traces."""

    def __init__(self, bus: bus_mod.Bus, batch_id: str) -> None:
        self.bus = bus
        self.batch_id = batch_id
        self.jobs: set[str] = set()
        self.traces = laddr_spans.Traces()

    async def take(self, item: event_feed.Item) -> list[dict[str, Any]]:
        """The trace rows an event brings: its own, or those of the jobs it adds to the batch. The API
        records a membership after submitting the jobs, so a new member may have traced before: its
        traces up to this event are read from the log (the later ones come through the feed)."""
        env = item.env
        if env.type != BATCH_EVENT:
            row = self.traces.add(item.seq, env) if env.job_id in self.jobs else None
            return [row] if row is not None else []
        if env.data.get("batch_id") != self.batch_id:
            return []
        added = [str(t["job_id"]) for t in env.data.get("tasks") or [] if isinstance(t, dict) and t.get("job_id")]
        rows = []
        for job_id in added:
            if job_id in self.jobs or not _valid_id(job_id):
                continue
            self.jobs.add(job_id)
            for seq, earlier in await self.bus.history(subjects.EVENTS, f"evt.trace.{job_id}.>"):
                if seq < item.seq and (row := self.traces.add(seq, earlier)) is not None:
                    rows.append(row)
        return rows


def batch_message(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "traces", "data": {"spans": nested_rows(rows), "count": len(rows)}}


@routes.get("/ws/batches/{batch_id}", allow_head=False)
async def ws_batch(request: web.Request) -> web.StreamResponse:
    principal = principal_of(request)
    if not wants_upgrade(request):
        return upgrade_required(request)
    st = state.of(request)
    batch = BatchJobs(st.bus, request.match_info["batch_id"])
    subject = batch_events(batch.batch_id)
    last = await st.bus.stream_last_seq(subjects.EVENTS)
    start = await event_feed.first_seq(st.bus, subject) if subject is not None else None
    if subject is None or start is None:
        async with accepted(request, principal) as sock:
            await sock.ws.close(code=WSCloseCode.OK, message=b"Batch not found")
            return sock.ws
    feed = await event_feed.Feed.open(st.bus, [subject, TRACE_FILTER], start_seq=start)
    try:
        async with accepted(request, principal) as sock:
            rows: list[dict[str, Any]] = []
            while not sock.gone:
                item = await feed.next(IDLE_S)
                if item is None:
                    break
                rows += await batch.take(item)
                if item.pending == 0 or item.seq >= last:
                    break
            await sock.send(batch_message(rows))
            fresh: list[dict[str, Any]] = []
            while not sock.gone:
                item = await feed.next(IDLE_S)
                if item is not None:
                    fresh += await batch.take(item)
                if fresh and (item is None or item.pending == 0 or len(fresh) >= INCREMENT_MAX):
                    await sock.send(batch_message(fresh))
                    fresh = []
            return sock.ws
    finally:
        await feed.close()


# --- /ws/logs/{container_name} -----------------------------------------------------------------------


@routes.get("/ws/logs/{container_name}", allow_head=False)
async def ws_container_logs(request: web.Request) -> web.StreamResponse:
    principal = principal_of(request)
    if not wants_upgrade(request):
        return upgrade_required(request)
    async with accepted(request, principal) as sock:
        await sock.send({"type": "error", "data": {"error": LOGS_UNAVAILABLE}})
        return sock.ws

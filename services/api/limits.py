"""Limits that keep one API process serving under slow, idle or greedy clients (`api.limits`).

Connection level (`GuardedRunner` serves the app through `GuardedServer`, whose connections
are `GuardedRequestHandler`s):
  * header timeout: a connection must deliver a complete request head within
    `header_timeout` of opening (or of a new request's first byte), else it is closed;
  * idle timeout: aiohttp's keep-alive timeout, closing connections with no request in flight;
  * connection cap: at `max_connections` open connections (kept below the process's fd
    limit) a new connection takes the place of the oldest idle one (no request in flight); when
    every connection is busy it gets a JSON 503 and is closed at once. Idle clients can thus
    neither use up the file descriptors nor lock out a client with a request to make;
  * aiohttp's plain-text parser errors (URL over 8 KiB, too many headers...) become JSON.

Request level (`limits_middleware`, read from the config in force, so a reload applies):
  * a token bucket per token (per client address without a valid token): 429 `rate_limited`
    with `Retry-After` once it is empty (off by default);
  * at most `sse_per_token` concurrent `GET /events` streams per token: 429 `too_many_streams` (the
    Laddr WebSockets, services/api/laddr_ws.py, hold the same slots: one bound for both).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestHandler

from services.api import auth, http_errors, state
from services.core import config as config_mod
from services.core import logging

log = logging.get("api.limits")

#: file descriptors kept free for NATS, Postgres, plugin processes and logs
FD_RESERVE = 256
OVERLOADED = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
    b"Retry-After: 1\r\nContent-Length: 79\r\n\r\n"
    b'{"error":"too many open connections to this API process","code":"overloaded"}\r\n'
)
#: the paths whose responses are long-lived streams counted against `sse_per_token`
STREAM_PATHS = frozenset({"/events"})
#: clients tracked by the rate limiter; past it, unknown clients share one bucket
MAX_BUCKETS = 10_000


def effective_max_connections(configured: int) -> int:
    """`configured`, lowered to stay FD_RESERVE below the process's soft fd limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(1, min(configured, soft - FD_RESERVE))


class GuardedRequestHandler(RequestHandler):
    """One HTTP connection with a header-read deadline, the connection cap and JSON parser errors."""

    def __init__(self, manager: GuardedServer, *, limits: config_mod.ApiLimits, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard_server = manager
        self._header_timeout_s = limits.header_timeout_s
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_count = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        server = self._guard_server
        if server.open_connections >= server.max_connections and not server.evict_idle():
            # refuse before aiohttp registers the connection: answer, close, free the fd now
            self._manager = None
            self._force_close = True
            server.refused += 1
            if server.refused == 1 or server.refused % 1000 == 0:
                log.warning(
                    "api_connections_refused",
                    open=server.open_connections,
                    cap=server.max_connections,
                    refused=server.refused,
                )
            transport.write(OVERLOADED)  # type: ignore[attr-defined]  # a stream server's transport writes
            transport.close()
            return
        super().connection_made(transport)
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:
            self._cancel_head_timer()
        elif data and self._head_timer is None and self._waiter is not None and not self._waiter.done():
            self._arm_head_timer()  # the first bytes of another request on a kept-alive connection

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def handle_error(
        self, request: Any, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("the response is partly sent already; cannot send an error")
        return http_errors.parser_error(status, exc, message)

    def _arm_head_timer(self) -> None:
        if self._header_timeout_s > 0:
            self._head_count = self._request_count
            self._head_timer = self._loop.call_later(self._header_timeout_s, self._head_deadline)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_deadline(self) -> None:
        self._head_timer = None
        if self._request_count == self._head_count and self.transport is not None:
            log.info("api_header_timeout", peer=str(self.peername), after_s=self._header_timeout_s)
            self.force_close()


class GuardedServer(web.Server):
    """aiohttp's connection factory, making `GuardedRequestHandler`s and counting them."""

    def __init__(self, plain: web.Server, *, limits: config_mod.ApiLimits) -> None:
        super().__init__(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            **plain._kwargs,
        )
        self.limits = limits
        self.max_connections = effective_max_connections(limits.max_connections)
        self.refused = 0
        self.evicted = 0

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    def evict_idle(self) -> bool:
        """Close the oldest connection with no request in flight (idle keep-alive, or never sent
        one) to make room; False when every connection is busy. So idle clients can delay, but
        never lock out, a client with a request to make."""
        for handler in self._connections:  # insertion order: oldest first
            if not handler._request_in_progress and not handler._messages and not handler._force_close:
                self.evicted += 1
                if self.evicted == 1 or self.evicted % 1000 == 0:
                    log.warning("api_idle_connections_evicted", cap=self.max_connections, evicted=self.evicted)
                handler.force_close()
                return True
        return False

    def __call__(self) -> GuardedRequestHandler:
        return GuardedRequestHandler(self, loop=self._loop, limits=self.limits, **self._kwargs)


class GuardedRunner(web.AppRunner):
    """An AppRunner whose connections are guarded by `api.limits` (idle timeout = keep-alive timeout)."""

    def __init__(self, app: web.Application, *, limits: config_mod.ApiLimits, **kwargs: Any) -> None:
        super().__init__(app, keepalive_timeout=limits.idle_timeout_s, **kwargs)
        self._limits = limits

    async def _make_server(self) -> web.Server:
        return GuardedServer(await super()._make_server(), limits=self._limits)


# --- per-request limits ---------------------------------------------------


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class TokenBuckets:
    """A token bucket per client key; `take` answers 0 (allowed) or the seconds until it would be."""

    def __init__(self) -> None:
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key: str, *, rate: float, burst: int, now: float) -> float:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._prune(rate=rate, burst=burst, now=now)
                if len(self._buckets) >= MAX_BUCKETS:
                    key = "overflow"
            bucket = self._buckets.setdefault(key, _Bucket(tokens=float(burst), stamp=now))
        bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.stamp) * rate)
        bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / rate

    def _prune(self, *, rate: float, burst: int, now: float) -> None:
        """Forget buckets that have refilled (their client is idle): they hold no state worth keeping."""
        self._buckets = {k: b for k, b in self._buckets.items() if b.tokens + (now - b.stamp) * rate < burst}


class StreamSlots:
    """How many long-lived streams each token holds open."""

    def __init__(self) -> None:
        self._open: dict[str, int] = {}

    @contextmanager
    def hold(self, key: str, cap: int) -> Iterator[bool]:
        """Yield whether a slot was free (and hold it until the block ends)."""
        if self._open.get(key, 0) >= cap:
            yield False
            return
        self._open[key] = self._open.get(key, 0) + 1
        try:
            yield True
        finally:
            left = self._open[key] - 1
            if left:
                self._open[key] = left
            else:
                del self._open[key]


BUCKETS = web.AppKey("rate_buckets", TokenBuckets)
STREAMS = web.AppKey("stream_slots", StreamSlots)


def setup(app: web.Application) -> None:
    app[BUCKETS] = TokenBuckets()
    app[STREAMS] = StreamSlots()


def token_key(principal: config_mod.Token) -> str:
    """The key a token's buckets and stream slots are counted under (the Laddr WebSockets share the slots)."""
    return "token:" + hashlib.sha256(principal.token.encode()).hexdigest()[:32]


def _client_key(request: web.Request) -> tuple[str, bool]:
    """(key, authenticated): a digest of a valid token, else the client's address."""
    presented = auth.presented_token(request, allow_query=request.path in STREAM_PATHS)
    principal = request.app[auth.TABLE].find(presented) if presented else None
    if principal is not None:
        return token_key(principal), True
    return f"addr:{request.remote}", False


def _too_many(message: str, code: str, retry_after_s: float, **details: Any) -> web.Response:
    seconds = max(1, math.ceil(retry_after_s))
    return web.json_response(
        {"error": message, "code": code, "retry_after": seconds, **details},
        status=429,
        headers={"Retry-After": str(seconds)},
        dumps=state.dumps,
    )


@web.middleware
async def limits_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    limits = state.of(request).config.api.limits
    streaming = request.method == "GET" and request.path in STREAM_PATHS
    if limits.rate_per_second <= 0 and not streaming:
        return await handler(request)  # nothing to count: skip the token lookup
    key, authenticated = _client_key(request)
    if limits.rate_per_second > 0:
        wait_s = request.app[BUCKETS].take(
            key, rate=limits.rate_per_second, burst=limits.rate_burst, now=time.monotonic()
        )
        if wait_s > 0:
            return _too_many(
                f"rate limit exceeded ({limits.rate_per_second:g} requests/s, burst "
                f"{limits.rate_burst}); retry after the delay in Retry-After",
                "rate_limited",
                wait_s,
            )
    if not (authenticated and streaming):
        return await handler(request)
    with request.app[STREAMS].hold(key, limits.sse_per_token) as free:
        if not free:
            return _too_many(
                f"this token already holds {limits.sse_per_token} open event streams "
                "(api.limits.sse_per_token); close one first",
                "too_many_streams",
                1.0,
                limit=limits.sse_per_token,
            )
        return await handler(request)

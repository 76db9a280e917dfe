"""The event bus: one NATS connection, the JetStream topology of the architecture, and
publish/read helpers. The only module (besides the consumers' fetch loops) that touches
nats-py; driver errors are re-raised as `errors.TransientError` / `errors.Conflict`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import Awaitable, Iterable
from typing import Any

import nats
import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client, Server
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore
from nats.protocol.parser import PERMISSIONS_ERR

from services.core import config as config_mod
from services.core import envelope, errors, logging, subjects

log = logging.get("bus")

#: (subject, encoded envelope, Nats-Msg-Id, more headers) of one message on its way
Encoded = tuple[str, bytes, str, dict[str, str] | None]

DAY_S = 86400.0
DUPLICATE_WINDOW_S = 120.0
#: reconnect backoff: first retry after RECONNECT_BASE_S, doubling up to RECONNECT_MAX_S (with jitter)
RECONNECT_BASE_S = 0.1
RECONNECT_MAX_S = 2.0
#: publish_all sends a stream's share of at least this many messages as JetStream atomic batches: at
#: `sync_interval: always` a batch is stored with one sync, so 256 messages take ~10 ms instead of ~70 ms one by
#: one (measured on nats-server 2.15); a small batch costs more than its messages one by one (~5-8 ms a commit)
ATOMIC_MIN = 32
#: nats-server's largest atomic batch
ATOMIC_MAX = 1000
#: err_code of a batch refused because one of its Nats-Msg-Ids is already stored (the whole batch is refused)
ATOMIC_DUPLICATE = 10201
#: err_code of a batch refused because one of its expected-last-sequence checks failed
ATOMIC_EXPECTED_SEQ = 10071
#: err_code of a batch sent to a stream whose config no longer allows atomic batches
ATOMIC_DISABLED = 10174
#: the streams whose publishes may go as atomic batches (where the server supports them)
ATOMIC_STREAMS = frozenset({subjects.COMMANDS, subjects.EVENTS, subjects.WORK})


class _ResilientClient(Client):
    """nats-py closes the client for good on any server -ERR but a stale connection or a
    permission violation (e.g. 'Maximum Control Line Exceeded', after which the server drops
    the connection): every publish then fails until the process restarts. Treat such an error
    like a lost connection instead, so the normal reconnect loop runs (forever, resubscribing)."""

    async def _process_err(self, err_msg: str) -> None:
        message = f"nats: {err_msg.strip(chr(39))}"
        if PERMISSIONS_ERR in message or self.is_connecting:
            await super()._process_err(err_msg)
            return
        log.warning("nats_server_error", error=message)
        await self._error_cb(nats.errors.Error(message))
        await self._process_op_err(nats.errors.Error(message))


def _backoff(servers: list[Server], _info: dict[str, Any]) -> tuple[Server | None, float]:
    """Pick the server tried least and wait exponentially longer the more it failed."""
    server = min(servers, key=lambda s: s.reconnects)
    delay = min(RECONNECT_MAX_S, RECONNECT_BASE_S * 2 ** min(server.reconnects, 16))
    return server, delay * random.uniform(0.5, 1.0)


async def open_for(config: config_mod.Config, *, name: str, bus: Bus | None = None) -> Bus:
    """`bus`, or a new connection to the config's NATS; either way with the topology in place."""
    if bus is None:
        if not config.nats_url:
            raise errors.ConfigError("NATS_URL (or nats.url) is not set")
        bus = await Bus.connect(config.nats_url, name=name, replicas=config.nats_replicas)
    await bus.ensure_topology(dedupe_ttl_s=config.dedupe_ttl_s)
    return bus


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class ConnectionLosses:
    """Each drop of the NATS connection sets the event of its time: a wait for PubAcks of messages sent
    before the drop ends then, instead of waiting out its timeout for replies that went with the old
    connection (the caller's input is redelivered; the message ids make the second publish a no-op)."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def dropped(self) -> None:
        self.event.set()
        self.event = asyncio.Event()


class Bus:
    """A connected NATS client with its JetStream context."""

    def __init__(self, nc: Client, *, replicas: int = 1, losses: ConnectionLosses | None = None) -> None:
        self.nc = nc
        self.losses = losses or ConnectionLosses()
        self.js: JetStreamContext = nc.jetstream(timeout=10)
        self.replicas = replicas
        self._kv: dict[str, KeyValue] = {}
        self._obj: dict[str, ObjectStore] = {}
        #: streams this server stores atomic batches in (set by ensure_topology)
        self.atomic_streams: set[str] = set()

    @classmethod
    async def connect(cls, url: str, *, name: str, replicas: int = 1, connect_timeout_s: float = 5) -> Bus:
        async def on_error(exc: Exception) -> None:
            log.warning("nats_error", error=str(exc) or type(exc).__name__)

        losses = ConnectionLosses()

        async def on_disconnect() -> None:
            log.warning("nats_disconnected")
            losses.dropped()

        async def on_reconnect() -> None:
            log.info("nats_reconnected")

        async def on_closed() -> None:
            log.info("nats_closed")

        servers = [part.strip() for part in url.split(",") if part.strip()]
        nc = _ResilientClient()
        try:
            await nc.connect(
                servers,
                name=name,
                # nats-py annotates both as int but uses them as seconds (asyncio.wait_for, asyncio.sleep)
                connect_timeout=connect_timeout_s,  # type: ignore[arg-type]
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.25,  # type: ignore[arg-type]
                allow_reconnect=True,
                error_cb=on_error,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
                closed_cb=on_closed,
                reconnect_to_server_handler=_backoff,
                pending_size=64 * 1024 * 1024,
            )
        except (OSError, nats.errors.Error, TimeoutError) as exc:
            raise errors.TransientError(f"cannot connect to NATS at {url}: {exc}") from exc
        return cls(nc, replicas=replicas, losses=losses)

    @property
    def connection_state(self) -> str:
        """connected, reconnecting, connecting, draining or closed: what /healthz reports."""
        nc = self.nc
        for name in ("connected", "reconnecting", "connecting", "draining", "closed"):
            if getattr(nc, f"is_{name}"):
                return name
        return "disconnected"

    async def close(self) -> None:
        if self.nc.is_closed:
            return
        # every publish was awaited to its PubAck already: flush and close (drain would wait
        # out the server-side expiry of our pending pull requests)
        with contextlib.suppress(Exception):
            await self.nc.flush(timeout=1)
        with contextlib.suppress(Exception):
            await self.nc.close()

    # --- topology -------------------------------------------------------

    def stream_configs(self) -> list[api.StreamConfig]:
        common: dict[str, Any] = {
            "storage": api.StorageType.FILE,
            "num_replicas": self.replicas,
            "duplicate_window": DUPLICATE_WINDOW_S,
        }
        atomic: dict[str, Any] = {"allow_atomic": True}
        return [
            api.StreamConfig(
                name=subjects.COMMANDS,
                subjects=[subjects.ALL_COMMANDS],
                retention=api.RetentionPolicy.LIMITS,
                max_age=7 * DAY_S,
                allow_direct=True,
                **common,
                **atomic,
            ),
            api.StreamConfig(
                name=subjects.EVENTS,
                subjects=[subjects.ALL_EVENTS],
                retention=api.RetentionPolicy.LIMITS,
                allow_direct=True,
                **common,
                **atomic,
            ),
            api.StreamConfig(
                name=subjects.WORK,
                subjects=[subjects.ALL_WORK, subjects.ALL_DELAYED],
                retention=api.RetentionPolicy.WORK_QUEUE,
                **common,
                **atomic,
            ),
            api.StreamConfig(
                name=subjects.INGEST,
                subjects=[subjects.ALL_INGEST],
                retention=api.RetentionPolicy.LIMITS,
                max_age=7 * DAY_S,
                allow_direct=True,
                **common,
            ),
        ]

    async def ensure_topology(self, *, dedupe_ttl_s: float = DAY_S, extra_object_stores: Iterable[str] = ()) -> None:
        """Create or update the streams, KV buckets and object stores; safe to call from every process."""
        try:
            for config in self.stream_configs():
                try:
                    info = await self.js.add_stream(config)
                except nats.js.errors.BadRequestError:
                    info = await self.js.update_stream(config)
                # a server older than 2.12 ignores allow_atomic (and would store a batch's messages unchecked)
                if info.config.allow_atomic and config.name in ATOMIC_STREAMS:
                    self.atomic_streams.add(config.name)
            await self._ensure_kv(subjects.KV_DEDUPE, ttl=dedupe_ttl_s)
            await self._ensure_kv(subjects.KV_PLUGIN_STATE, ttl=None)
            await self._ensure_kv(subjects.KV_AGENTS, ttl=300.0)
            await self._ensure_kv(subjects.KV_BREAKERS, ttl=None)
            await self._ensure_kv(subjects.KV_TREES, ttl=7 * DAY_S)
            await self._ensure_kv(subjects.KV_TOOL_CACHE, ttl=DAY_S)
            for bucket in (subjects.OBJ_RESPONSES, *extra_object_stores):
                await self.object_store(bucket)
        except (nats.errors.Error, TimeoutError) as exc:
            raise errors.TransientError(f"cannot set up JetStream: {exc}") from exc

    async def _ensure_kv(self, bucket: str, *, ttl: float | None) -> KeyValue:
        config = api.KeyValueConfig(
            bucket=bucket, ttl=ttl, replicas=self.replicas, storage=api.StorageType.FILE, history=1
        )
        try:
            kv = await self.js.create_key_value(config)
        except nats.js.errors.BadRequestError:
            kv = await self.js.key_value(bucket)
        self._kv[bucket] = kv
        return kv

    async def kv(self, bucket: str) -> KeyValue:
        if bucket not in self._kv:
            self._kv[bucket] = await self.js.key_value(bucket)
        return self._kv[bucket]

    async def object_store(self, bucket: str) -> ObjectStore:
        if bucket not in self._obj:
            try:
                self._obj[bucket] = await self.js.create_object_store(
                    bucket,
                    config=api.ObjectStoreConfig(bucket=bucket, replicas=self.replicas, storage=api.StorageType.FILE),
                )
            except nats.js.errors.BadRequestError:
                self._obj[bucket] = await self.js.object_store(bucket)
        return self._obj[bucket]

    async def put_object(self, bucket: str, key: str, data: bytes) -> int:
        """Store `data` under `key` (replacing it); returns its size in bytes."""
        try:
            store = await self.object_store(bucket)
            info = await store.put(key, data)
        except (nats.errors.Error, TimeoutError) as exc:
            raise errors.TransientError(f"object store {bucket}: put {key} failed: {exc}") from exc
        return int(info.size or 0)

    async def get_object(self, bucket: str, key: str) -> bytes | None:
        """The object's bytes; None when it (or its bucket) is gone."""
        try:
            store = self._obj.get(bucket) or await self.js.object_store(bucket)
            result = await store.get(key)
        except nats.js.errors.NotFoundError:
            return None
        except (nats.errors.Error, TimeoutError) as exc:
            raise errors.TransientError(f"object store {bucket}: get {key} failed: {exc}") from exc
        return bytes(result.data or b"")

    # --- publishing -----------------------------------------------------

    async def publish(
        self,
        subject: str,
        env: envelope.Envelope,
        *,
        timeout_s: float = 10,
        expected_last_subject_seq: int | None = None,
        expected_filter: str | None = None,
    ) -> api.PubAck:
        """Publish and wait for the PubAck; a duplicate id answers with the original's ack.
        With `expected_last_subject_seq`, raise Conflict unless that is the last sequence (0: none) of the
        subject, or of every subject `expected_filter` matches (e.g. all of one job's events)."""
        headers = {subjects.MSG_ID: env.id}
        if expected_last_subject_seq is not None:
            headers[subjects.EXPECTED_LAST_SUBJECT_SEQ] = str(expected_last_subject_seq)
            if expected_filter is not None:
                headers[subjects.EXPECTED_LAST_SUBJECT_SEQ_SUBJECT] = expected_filter
        data = self._fitting(subject, envelope.encode(env))
        try:
            return await self.js.publish(subject, data, timeout=timeout_s, headers=headers)
        except nats.js.errors.APIError as exc:
            if exc.err_code == 10071:
                raise errors.Conflict(f"wrong last sequence on {subject}") from exc
            raise errors.TransientError(f"publish to {subject} failed: {exc}") from exc
        except (nats.errors.Error, TimeoutError) as exc:
            raise errors.TransientError(f"publish to {subject} failed: {exc}") from exc

    def _fitting(self, subject: str, data: bytes) -> bytes:
        """`data`, or 413 when it exceeds the server's max_payload (a permanent refusal, not an outage:
        retrying the same message can never succeed)."""
        limit = self.nc.max_payload
        if limit and len(data) > limit:
            raise errors.PayloadTooLarge(
                f"the message for {subject} ({len(data)} bytes) exceeds the event bus's max_payload ({limit} bytes)",
                max_payload=limit,
            )
        return data

    async def publish_all(self, items: Iterable[tuple[str, envelope.Envelope]]) -> list[api.PubAck]:
        """Publish several messages pipelined and wait for every PubAck (in order); a TransientError when one
        fails, none comes within 30 s, or the connection drops before all came. A stream's share of
        ATOMIC_MIN or more messages goes as atomic batches (all stored with one sync, or none), one after
        another so the stream keeps the share's order; a batch the server refuses goes again one by one."""
        encoded: list[Encoded] = [
            (subject, self._fitting(subject, envelope.encode(env)), env.id, None) for subject, env in items
        ]
        by_stream: dict[str | None, list[int]] = {}
        for i, (subject, *_) in enumerate(encoded):
            by_stream.setdefault(subjects.stream_of(subject), []).append(i)
        acks: list[api.PubAck | None] = [None] * len(encoded)
        shares = list(by_stream.items())
        results = await self._until_lost(
            asyncio.gather(*(self._share(stream, [encoded[i] for i in positions]) for stream, positions in shares))
        )
        for (_, positions), got in zip(shares, results, strict=True):
            for i, ack in zip(positions, got, strict=True):
                acks[i] = ack
        return [ack for ack in acks if ack is not None]

    async def publish_firsts(self, items: list[tuple[str, envelope.Envelope, str]]) -> list[int | None]:
        """Publish each (subject, envelope, filter) as the first message of its filter (e.g. a job's first
        event over `evt.job.<id>.>`), pipelined or as atomic batches: per message the stream sequence where
        it was stored as that first, or None where the filter held messages already (a re-decided input,
        even past the duplicate window); those are then published plainly, their ids deduplicating."""
        encoded: list[Encoded] = [
            (
                subject,
                self._fitting(subject, envelope.encode(env)),
                env.id,
                {subjects.EXPECTED_LAST_SUBJECT_SEQ: "0", subjects.EXPECTED_LAST_SUBJECT_SEQ_SUBJECT: filter_},
            )
            for subject, env, filter_ in items
        ]
        return list(await self._until_lost(self._firsts(encoded)))

    async def _firsts(self, encoded: list[Encoded]) -> list[int | None]:
        seqs: list[int | None] = []
        streams = {subjects.stream_of(subject) for subject, *_ in encoded}
        if len(encoded) >= ATOMIC_MIN and len(streams) == 1 and streams <= self.atomic_streams:
            for start in range(0, len(encoded), ATOMIC_MAX):
                batch = await self._atomic(encoded[start : start + ATOMIC_MAX])
                if batch is None:  # one of them is not the first (or another refusal): the rest each on its own
                    break
                seqs += [ack.seq for ack in batch]
            encoded = encoded[len(seqs) :]
        # each as a request of its own: nats-py's publish_async never resolves a future the server answers
        # with an error (it raises inside its reply callback), and a failed check is an expected answer here
        answers = await asyncio.gather(
            *(
                self.js.publish(subject, data, timeout=30, headers={subjects.MSG_ID: msg_id, **(extra or {})})
                for subject, data, msg_id, extra in encoded
            ),
            return_exceptions=True,
        )
        plain: list[Encoded] = []
        for message, answer in zip(encoded, answers, strict=True):
            if isinstance(answer, api.PubAck):
                seqs.append(answer.seq)
            elif isinstance(answer, nats.js.errors.APIError) and answer.err_code == ATOMIC_EXPECTED_SEQ:
                seqs.append(None)
                plain.append((*message[:3], None))
            elif isinstance(answer, BaseException):
                raise answer
        if plain:
            await self._one_by_one(plain)
        return seqs

    async def _share(self, stream: str | None, share: list[Encoded]) -> list[api.PubAck]:
        """One stream's share of a publish_all: atomic batches in order where the stream takes them."""
        if stream not in self.atomic_streams or len(share) < ATOMIC_MIN:
            return await self._one_by_one(share)
        acks: list[api.PubAck] = []
        for start in range(0, len(share), ATOMIC_MAX):
            chunk = share[start : start + ATOMIC_MAX]
            acks += await self._atomic(chunk) or await self._one_by_one(chunk)
        return acks

    async def _send(self, message: Encoded) -> asyncio.Future[api.PubAck]:
        subject, data, msg_id, extra = message
        return await self.js.publish_async(subject, data, headers={subjects.MSG_ID: msg_id, **(extra or {})})

    async def _one_by_one(self, encoded: list[Encoded]) -> list[api.PubAck]:
        futures = [await self._send(message) for message in encoded]
        return list(await asyncio.gather(*futures))

    async def _atomic(self, encoded: list[Encoded]) -> list[api.PubAck] | None:
        """One atomic batch (ADR-50): every message but the last published plainly, the last with the commit
        header as a request whose reply is the batch's ack (the last sequence and the count). None when the
        server refused it: nothing of it is stored, and the caller sends the messages one by one (where the
        ids make what is stored already a no-op), whatever the reason, so a batch the server will never
        take (a limit of its) cannot make the caller's input come back forever."""
        batch_id = uuid.uuid4().hex
        last = len(encoded)
        for k, (subject, data, msg_id, extra) in enumerate(encoded, start=1):
            headers = {
                subjects.MSG_ID: msg_id,
                subjects.BATCH_ID: batch_id,
                subjects.BATCH_SEQUENCE: str(k),
                **(extra or {}),
            }
            if k < last:
                await self.nc.publish(subject, data, headers=headers)
                continue
            headers[subjects.BATCH_COMMIT] = "1"
            reply = await self.nc.request(subject, data, headers=headers, timeout=30)
        answer = orjson.loads(reply.data)
        if "error" in answer:
            error = answer["error"]
            if error.get("err_code") == ATOMIC_DISABLED:  # e.g. an older process re-created the stream's config
                self.atomic_streams.discard(str(answer.get("stream") or subjects.stream_of(encoded[0][0])))
            if error.get("err_code") not in (ATOMIC_DUPLICATE, ATOMIC_EXPECTED_SEQ):
                log.warning(
                    "atomic_batch_refused",
                    stream=answer.get("stream"),
                    messages=last,
                    err_code=error.get("err_code"),
                    error=error.get("description"),
                )
            return None
        first = int(answer["seq"]) - int(answer.get("count") or last) + 1
        return [api.PubAck(stream=answer["stream"], seq=first + k) for k in range(last)]

    async def _until_lost(self, waiting: Awaitable[Any]) -> Any:
        """`waiting`'s result, or a TransientError when it fails, takes over 30 s or the connection drops first."""
        lost = self.losses.event
        waiting = asyncio.ensure_future(waiting)
        dropped = asyncio.ensure_future(lost.wait())
        try:
            await asyncio.wait({waiting, dropped}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        finally:
            dropped.cancel()
        if not waiting.done():
            waiting.cancel()
            waiting.add_done_callback(_retrieved)  # no "exception was never retrieved" for the cancelled wait
            why = "the connection dropped before every PubAck came" if lost.is_set() else "no PubAck within 30s"
            raise errors.TransientError(f"publish failed: {why}")
        try:
            return waiting.result()
        except (nats.errors.Error, TimeoutError) as exc:  # nats.js.errors.APIError is a nats.errors.Error
            raise errors.TransientError(f"publish failed: {exc}") from exc

    # --- reading --------------------------------------------------------

    async def last_message(self, stream: str, subject: str) -> tuple[int, envelope.Envelope] | None:
        """The last message on `subject` in `stream` as (stream_seq, envelope), or None."""
        try:
            raw = await self.js.get_last_msg(stream, subject, direct=True)
        except nats.js.errors.NotFoundError:
            return None
        except (nats.errors.Error, TimeoutError) as exc:
            raise errors.TransientError(f"read of {subject} failed: {exc}") from exc
        if raw.data is None:
            return None
        return int(raw.seq or 0), envelope.decode(raw.data)

    async def history(
        self, stream: str, subject_filter: str, *, limit: int = 10_000
    ) -> list[tuple[int, envelope.Envelope]]:
        """Every message matching `subject_filter` in `stream`, oldest first (bounded by `limit`)."""
        out: list[tuple[int, envelope.Envelope]] = []
        seq = 0
        try:
            while len(out) < limit:
                try:
                    raw = await self.js.get_msg(stream, seq=seq + 1, subject=subject_filter, next=True, direct=True)
                except nats.js.errors.NotFoundError:
                    break
                if raw.seq is None or raw.data is None:
                    break
                seq = int(raw.seq)
                out.append((seq, envelope.decode(raw.data)))
        except (nats.errors.Error, TimeoutError) as exc:
            raise errors.TransientError(f"read of {subject_filter} failed: {exc}") from exc
        return out

    async def stream_identity(self, stream: str) -> str:
        """What tells one incarnation of a stream from another: its creation time."""
        try:
            info = await self.js.stream_info(stream)
        except (nats.errors.Error, TimeoutError) as exc:
            raise errors.TransientError(f"stream info {stream} failed: {exc}") from exc
        return str(info.created)

    async def stream_last_seq(self, stream: str) -> int:
        try:
            info = await self.js.stream_info(stream)
        except (nats.errors.Error, TimeoutError) as exc:
            raise errors.TransientError(f"stream info {stream} failed: {exc}") from exc
        return int(info.state.last_seq)

    async def pending_work(self) -> int:
        """Work items waiting in WORK (due and parked for a retry)."""
        try:
            info = await self.js.stream_info(subjects.WORK)
            return int(info.state.messages)
        except (nats.errors.Error, TimeoutError) as exc:
            raise errors.TransientError(f"stream info WORK failed: {exc}") from exc

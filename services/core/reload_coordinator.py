"""The API's side of `POST /system/reload`: one reload across every service, all or nothing.

1. Prepare. The API stages its own file (services/core/reloads.py `Participant.stage`); a refusal
   ends the reload there. It then asks every participant on `ctl.reload.prepare` and collects the
   votes until each member known alive (services/core/members.py) has answered, at most
   `PREPARE_TIMEOUT_S`. A service that cannot read its file, reads it to another fingerprint (its
   own copy, plugin directory or `${VAR}` values differ), refuses the change, or does not answer
   → `Refused` (409) naming each; everyone who staged drops it (`ctl.reload.abort`). Nothing changed.
2. Commit. The API publishes `evt.system.config_reloaded` (durable: it is the decision, and what a
   service starting later catches up from), applies its own staged config and waits, at most
   `ACK_TIMEOUT_S`, for the ack of every participant that prepared. One that has not acked by then
   is reported as `pending`: the reload stays committed (it validated the config and holds it
   staged; it applies it when the announcement reaches it, or from the EVENTS stream when its
   staged copy expires).

One reload at a time: an asyncio lock in this process and, across API processes, a lease in the
`agents` KV bucket (`reload.lock`, taken with compare-and-set, expiring after `LOCK_TTL_S` if its
holder died).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import nats.errors
import nats.js.errors
import orjson
from nats.aio.msg import Msg
from nats.js.kv import KeyValue

from services.core import bus as bus_mod
from services.core import errors, logging, members, reloads, subjects

log = logging.get("reloads")

PREPARE_TIMEOUT_S = 5.0
ACK_TIMEOUT_S = 10.0
ABORT_TIMEOUT_S = 2.0
LOCK_KEY = "reload.lock"
#: a lease older than this is taken over (its holder died mid-reload); longer than any reload
LOCK_TTL_S = 60.0
#: how long a reload waits for one running in another API process
LOCK_WAIT_S = 30.0
_LOCK_POLL_S = 0.05
NOT_RELOADED = "configuration not reloaded, the previous one stays everywhere: "


class Refused(errors.HeadraceError):
    """The reload was refused; no service changed its config."""

    def __init__(self, message: str, failed: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.failed = failed or []


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    txn: str
    fingerprint: str
    #: the services that applied it before the answer (this API first)
    applied: list[dict[str, Any]]
    #: services that prepared but had not acked within ACK_TIMEOUT_S
    pending: list[dict[str, Any]]


class _Votes:
    """The votes of one round (one per member), done once every expected member has voted."""

    def __init__(self, txn: str, expected: set[str]) -> None:
        self.txn = txn
        self.expected = expected
        self.votes: dict[str, reloads.Vote] = {}
        self._done = asyncio.Event()
        if not expected:
            self._done.set()

    async def on_msg(self, msg: Msg) -> None:
        vote = reloads.Vote.decode(msg.data)
        if vote is None or vote.txn != self.txn:
            return
        self.votes[vote.member] = vote
        if self.expected <= self.votes.keys():
            self._done.set()

    async def wait(self, timeout_s: float) -> dict[str, reloads.Vote]:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._done.wait(), timeout=timeout_s)
        return dict(self.votes)


class Coordinator:
    """Runs the reloads of one API process; `local` is that API's own participant."""

    def __init__(
        self,
        bus: bus_mod.Bus,
        local: reloads.Participant,
        *,
        prepare_timeout_s: float = PREPARE_TIMEOUT_S,
        ack_timeout_s: float = ACK_TIMEOUT_S,
        lock_wait_s: float = LOCK_WAIT_S,
    ) -> None:
        self.bus = bus
        self.local = local
        self.prepare_timeout_s = prepare_timeout_s
        self.ack_timeout_s = ack_timeout_s
        self.lock_wait_s = lock_wait_s
        self._lock = asyncio.Lock()

    async def reload(self) -> Outcome:
        """Raises Refused (nothing changed anywhere) or errors.TransientError (NATS failed)."""
        async with self._lock, lease(self.bus, self.local.source, wait_s=self.lock_wait_s):
            return await self._run(uuid.uuid4().hex)

    async def _run(self, txn: str) -> Outcome:
        mine = await self.local.stage(txn)
        if not mine.ok or mine.fingerprint is None:
            self.local.abort(txn)
            error = mine.error or "not staged"
            raise Refused(error if error.startswith(reloads.REJECTED) else NOT_RELOADED + error, [mine.summary()])
        try:
            expected = {r["id"]: r for r in await members.alive(self.bus) if r.get("id") != self.local.id}
        except (nats.errors.Error, TimeoutError) as exc:
            self.local.abort(txn)
            raise errors.TransientError(
                f"configuration not reloaded: the reload members are unreadable: {str(exc) or type(exc).__name__}"
            ) from exc
        request = {"txn": txn, "coordinator": self.local.id, "fingerprint": mine.fingerprint}
        votes = await self._ask(subjects.RELOAD_PREPARE, request, set(expected), self.prepare_timeout_s)
        prepared = sorted((v for v in votes.values() if v.ok), key=lambda v: v.member)
        problems = self._problems(mine, votes, expected)
        if problems:
            await self._abort(txn, prepared)
            raise Refused(NOT_RELOADED + "; ".join(text for _, text in problems), [who for who, _ in problems])
        log.info("config_reload_prepared", txn=txn, fingerprint=mine.fingerprint, members=[v.source for v in prepared])
        return await self._commit(txn, mine, prepared)

    def _problems(
        self, mine: reloads.Vote, votes: dict[str, reloads.Vote], expected: dict[str, dict[str, Any]]
    ) -> list[tuple[dict[str, Any], str]]:
        out: list[tuple[dict[str, Any], str]] = []
        for vote in sorted(votes.values(), key=lambda v: v.member):
            if not vote.ok:
                out.append((vote.summary(), f"{vote.who}: {vote.error}"))
            elif vote.fingerprint != mine.fingerprint:
                error = (
                    f"reads the configuration differently (fingerprint {vote.fingerprint}, this API's "
                    f"{mine.fingerprint}): its own copy of the file, its plugin directories or its ${{VAR}} "
                    "values differ"
                )
                out.append(({**vote.summary(), "error": error}, f"{vote.who}: {error}"))
        for member in sorted(set(expected) - set(votes)):
            record = expected[member]
            error = (
                f"did not answer within {self.prepare_timeout_s:g} s (its last heartbeat was at "
                f"{record.get('last_seen')}; one that died without a goodbye counts as alive for "
                f"{members.FRESH_INTERVALS} heartbeat intervals)"
            )
            who = {"service": record.get("role"), "instance": member, "source": record.get("source"), "error": error}
            out.append((who, f"{record.get('source')} ({record.get('role')}, member {member}): {error}"))
        return out

    async def _commit(self, txn: str, mine: reloads.Vote, prepared: list[reloads.Vote]) -> Outcome:
        assert mine.fingerprint is not None
        config = self.local.current()
        acks = _Votes(txn, {v.member for v in prepared})
        sub = await self.bus.nc.subscribe(subjects.reload_ack(txn), cb=acks.on_msg)
        try:
            event = reloads.reloaded_event(
                mine.fingerprint,
                str(config.path) if config.path else None,
                source=self.local.source,
                txn=txn,
                services=[self.local.id, *(v.member for v in prepared)],
            )
            try:
                await self.bus.publish(*event)
            except errors.TransientError as exc:
                await self._unannounced(txn, prepared, exc)
            applied_here = await self.local.commit(txn)
            answered = await acks.wait(self.ack_timeout_s)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        applied = [applied_here.summary()] if applied_here.ok else []
        pending = [] if applied_here.ok else [applied_here.summary()]
        for vote in prepared:
            ack = answered.get(vote.member)
            if ack is not None and ack.ok:
                applied.append(ack.summary())
            else:
                error = (
                    ack.error
                    if ack is not None
                    else (
                        f"no ack within {self.ack_timeout_s:g} s: it applies the staged config when the announcement "
                        f"reaches it, at the latest {reloads.STAGE_TTL_S:g} s after staging it"
                    )
                )
                pending.append({**vote.summary(), "error": error})
        log.info(
            "config_reload_committed",
            txn=txn,
            fingerprint=mine.fingerprint,
            applied=[a["source"] for a in applied],
            pending=[p["source"] for p in pending],
        )
        return Outcome(txn=txn, fingerprint=mine.fingerprint, applied=applied, pending=pending)

    async def _unannounced(self, txn: str, prepared: list[reloads.Vote], exc: errors.TransientError) -> None:
        """The announcement's publish failed: if it was stored anyway the reload goes on, else it is
        dropped everywhere; when that cannot be told, every staged copy resolves itself later."""
        try:
            last = await self.bus.last_message(subjects.EVENTS, reloads.EVENT_SUBJECT)
        except errors.TransientError:
            raise errors.TransientError(
                f"reload outcome unknown: announcing it failed ({exc.message}) and the event log is unreadable; "
                f"every service applies it within {reloads.STAGE_TTL_S:g} s if it was stored, else keeps the "
                "previous one"
            ) from exc
        if last is not None and last[1].data.get("txn") == txn:
            return
        await self._abort(txn, prepared)
        raise errors.TransientError(f"{NOT_RELOADED}announcing it failed: {exc.message}") from exc

    async def _ask(
        self, subject: str, request: dict[str, Any], expected: set[str], timeout_s: float
    ) -> dict[str, reloads.Vote]:
        """Publish `request` with a reply inbox; the votes of every responder until `expected` all answered."""
        votes = _Votes(str(request["txn"]), expected)
        inbox = self.bus.nc.new_inbox()
        sub = await self.bus.nc.subscribe(inbox, cb=votes.on_msg)
        try:
            await self.bus.nc.publish(subject, orjson.dumps(request), reply=inbox)
            return await votes.wait(timeout_s)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _abort(self, txn: str, prepared: list[reloads.Vote]) -> None:
        """Everyone who staged `txn` drops it (they answer, so it is gone when this returns; one that
        does not answer drops it when its staged copy expires unannounced)."""
        self.local.abort(txn)
        try:
            await self._ask(subjects.RELOAD_ABORT, {"txn": txn}, {v.member for v in prepared}, ABORT_TIMEOUT_S)
        except (nats.errors.Error, TimeoutError) as exc:
            log.warning("config_reload_abort_unsent", txn=txn, error=str(exc) or type(exc).__name__)


@contextlib.asynccontextmanager
async def lease(
    bus: bus_mod.Bus, holder: str, *, wait_s: float = LOCK_WAIT_S, ttl_s: float = LOCK_TTL_S
) -> AsyncIterator[None]:
    """Hold `reload.lock` (compare-and-set in KV) for the block; Refused if another holder keeps it past `wait_s`."""
    try:
        kv = await bus.kv(subjects.KV_AGENTS)
        deadline = time.monotonic() + wait_s
        while True:
            value = orjson.dumps({"holder": holder, "since": time.time(), "until": time.time() + ttl_s})
            revision, other = await _try_lock(kv, value)
            if revision is not None:
                break
            if time.monotonic() >= deadline:
                raise Refused(
                    f"another reload is in progress (held by {other.get('holder')}); retry when it is done", []
                )
            await asyncio.sleep(_LOCK_POLL_S)
    except (nats.errors.Error, TimeoutError) as exc:
        raise errors.TransientError(
            f"configuration not reloaded: the reload lock is unreachable: {str(exc) or type(exc).__name__}"
        ) from exc
    try:
        yield
    finally:
        try:
            await kv.delete(LOCK_KEY, last=revision)
        except Exception as exc:  # it expires after ttl_s anyway
            log.warning("reload_lock_release_failed", error=str(exc) or type(exc).__name__)


async def _try_lock(kv: KeyValue, value: bytes) -> tuple[int | None, dict[str, Any]]:
    """(the lock's revision, or None and the holder's record when someone else holds a live lease)."""
    try:
        return await kv.create(LOCK_KEY, value), {}
    except nats.js.errors.KeyWrongLastSequenceError:
        pass
    try:
        entry = await kv.get(LOCK_KEY)
    except nats.js.errors.KeyNotFoundError:  # released in between: try again at once
        return None, {}
    try:
        held = orjson.loads(entry.value or b"{}")
    except orjson.JSONDecodeError:
        held = {}
    if isinstance(held, dict) and float(held.get("until") or 0) > time.time():
        return None, held
    try:  # the holder died mid-reload: take its expired lease over, unless someone else just did
        return await kv.update(LOCK_KEY, value, last=entry.revision), {}
    except nats.js.errors.KeyWrongLastSequenceError:
        return None, held if isinstance(held, dict) else {}

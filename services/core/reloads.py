"""The participant's side of `POST /system/reload` (the API coordinates: services/core/reload_coordinator.py).

Every service that serves from the config (api, dispatcher, runner) runs one `Participant`:

    ctl.reload.prepare (request)   re-read and validate its own file, stage the result, answer a `Vote`
                                   (ok, fingerprint, error) to the request's inbox
    ctl.reload.abort (request)     drop the staged config of that reload, answer
    evt.system.config_reloaded     the commit (a durable event): apply the staged config, then publish a
                                   `Vote` on ctl.reload.ack.<txn>

A participant registers as a member (services/core/members.py) only after it subscribed, so the
API never waits for one that cannot hear it. A service that was not part of a reload (it was
still starting) adopts the announced config when the event reaches it, or from the last
announcement in the EVENTS stream when it starts, but only if its own file reads to the announced
fingerprint. A staged config neither committed nor aborted (the API died, or the event was
missed) is resolved after `STAGE_TTL_S` from the EVENTS stream: applied if its reload was
announced, dropped if not.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from services.core import bus as bus_mod
from services.core import config as config_mod
from services.core import envelope, errors, logging, members, subjects

log = logging.get("reloads")

EVENT_TYPE = "system.config_reloaded"
EVENT_SUBJECT = subjects.system_event("config_reloaded")
#: a staged config still neither committed nor aborted after this is resolved from the EVENTS stream
STAGE_TTL_S = 60.0
#: Ductile's text for a change a reload cannot apply
REJECTED = "config reload rejected: "


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Vote:
    """One participant's answer to a prepare (or its ack of a commit)."""

    txn: str
    member: str
    role: str
    source: str
    ok: bool
    fingerprint: str | None = None
    error: str | None = None

    def encode(self) -> bytes:
        return orjson.dumps(dataclasses.asdict(self))

    @classmethod
    def decode(cls, data: bytes) -> Vote | None:
        try:
            raw = orjson.loads(data)
            return cls(
                txn=str(raw["txn"]),
                member=str(raw["member"]),
                role=str(raw["role"]),
                source=str(raw["source"]),
                ok=bool(raw["ok"]),
                fingerprint=raw.get("fingerprint"),
                error=raw.get("error"),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            return None

    @property
    def who(self) -> str:
        return f"{self.source} ({self.role}, member {self.member})"

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"service": self.role, "instance": self.member, "source": self.source}
        if self.error:
            out["error"] = self.error
        return out


def restart_needed(current: config_mod.Config, fresh: config_mod.Config) -> str | None:
    """Ductile's reload rejections: what a running process cannot change (`webhooks.listen` has no
    effect here, webhooks are served on the API listener)."""
    if (current.api.host, current.api.port) != (fresh.api.host, fresh.api.port):
        return REJECTED + "changes to api.listen require a full restart"
    if current.state_dir != fresh.state_dir:
        return REJECTED + "changes to service.state_dir require a full restart"
    return None


def reloaded_event(
    fingerprint: str, path: str | None, *, source: str, txn: str, services: list[str]
) -> tuple[str, envelope.Envelope]:
    """The commit of reload `txn`: kept in EVENTS, so a service starting later catches up from it."""
    env = envelope.make(
        EVENT_TYPE,
        source=source,
        id=f"config_reloaded:{txn}",
        data={"fingerprint": fingerprint, "path": path, "txn": txn, "services": services},
    )
    return EVENT_SUBJECT, env


@dataclasses.dataclass(slots=True)
class _Staged:
    config: config_mod.Config
    fingerprint: str
    deadline: float


class Participant:
    """One service's part in reloads. `start()` once the service can apply a config (subscribes,
    catches up, registers), then spawn `run(stop_event)` (heartbeat, expiry of staged configs,
    goodbye)."""

    def __init__(
        self,
        bus: bus_mod.Bus,
        *,
        role: str,
        source: str,
        current: Callable[[], config_mod.Config],
        apply: Callable[[config_mod.Config], Awaitable[None]],
    ) -> None:
        self.bus = bus
        self.role = role
        self.source = source
        self.id = members.member_id(role)
        self.current = current
        self._apply = apply
        self.staged: dict[str, _Staged] = {}
        #: the last reload this participant applied
        self.applied: str | None = None
        self._aborted: deque[str] = deque(maxlen=64)
        self._lock = asyncio.Lock()
        self._subs: list[Subscription] = []
        self._started_at = envelope.rfc3339(envelope.now())
        self._fingerprint: tuple[config_mod.Config, str] | None = None

    # --- lifecycle ------------------------------------------------------

    async def start(self) -> None:
        nc = self.bus.nc
        self._subs = [
            await nc.subscribe(subjects.RELOAD_PREPARE, cb=self._on_prepare),
            await nc.subscribe(subjects.RELOAD_ABORT, cb=self._on_abort),
            await nc.subscribe(EVENT_SUBJECT, cb=self._on_announced),
        ]
        await nc.flush()
        await self._catch_up()
        await self._beat()  # from now on the API waits for this member's answer

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.current().heartbeat_interval_s)
            if stop.is_set():
                break
            await self._beat()
            await self.resolve_expired()
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        try:
            await asyncio.wait_for(members.clear(self.bus, self.id), timeout=2.0)
        except Exception as exc:  # the bucket TTL removes the key anyway
            log.warning("member_clear_failed", member=self.id, error=str(exc) or type(exc).__name__)

    def fingerprint(self) -> str:
        config = self.current()
        if self._fingerprint is None or self._fingerprint[0] is not config:
            self._fingerprint = (config, config_mod.fingerprint(config))
        return self._fingerprint[1]

    async def _beat(self) -> None:
        rec = members.record(
            member=self.id,
            role=self.role,
            source=self.source,
            fingerprint=self.fingerprint(),
            interval_s=self.current().heartbeat_interval_s,
            started_at=self._started_at,
        )
        try:
            await members.beat(self.bus, rec)
        except Exception as exc:  # a missed beat must never stop the service
            log.warning("member_beat_failed", member=self.id, error=str(exc) or type(exc).__name__)

    # --- phase 1 --------------------------------------------------------

    def _vote(self, txn: str, *, ok: bool, fingerprint: str | None = None, error: str | None = None) -> Vote:
        return Vote(
            txn=txn, member=self.id, role=self.role, source=self.source, ok=ok, fingerprint=fingerprint, error=error
        )

    async def stage(self, txn: str) -> Vote:
        """Re-read this service's own file and keep the result for `commit(txn)`; nothing changes yet."""
        current = self.current()
        try:
            fresh = await asyncio.to_thread(config_mod.reload, current)
        except errors.ConfigError as exc:
            return self._vote(txn, ok=False, error=exc.message)
        except Exception as exc:  # whatever stops this service from reading it is its answer
            log.exception("config_stage_failed", txn=txn)
            return self._vote(txn, ok=False, error=f"could not read the configuration: {type(exc).__name__}")
        rejection = restart_needed(current, fresh)
        if rejection is not None:
            return self._vote(txn, ok=False, error=rejection)
        if txn in self._aborted:
            return self._vote(txn, ok=False, error="the reload was aborted while this service staged it")
        fingerprint = config_mod.fingerprint(fresh)
        self.staged[txn] = _Staged(config=fresh, fingerprint=fingerprint, deadline=time.monotonic() + STAGE_TTL_S)
        return self._vote(txn, ok=True, fingerprint=fingerprint)

    def abort(self, txn: str) -> None:
        self._aborted.append(txn)
        if self.staged.pop(txn, None) is not None:
            log.info("config_reload_aborted", service=self.role, txn=txn)

    async def _on_prepare(self, msg: Msg) -> None:
        try:
            request = orjson.loads(msg.data)
            txn, coordinator = str(request["txn"]), request.get("coordinator")
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        if coordinator == self.id or not msg.reply:
            return  # the coordinating API stages its own config directly
        vote = await self.stage(txn)
        await self.bus.nc.publish(msg.reply, vote.encode())

    async def _on_abort(self, msg: Msg) -> None:
        try:
            txn = str(orjson.loads(msg.data)["txn"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        self.abort(txn)
        if msg.reply:
            await self.bus.nc.publish(msg.reply, self._vote(txn, ok=True).encode())

    # --- phase 2 --------------------------------------------------------

    async def commit(self, txn: str) -> Vote:
        """Apply the config staged for `txn` (idempotent: a second call answers as the first did)."""
        async with self._lock:
            if self.applied == txn:
                return self._vote(txn, ok=True, fingerprint=self.fingerprint())
            staged = self.staged.pop(txn, None)
            if staged is None:
                return self._vote(txn, ok=False, error="nothing staged for this reload")
            try:
                await self._apply(staged.config)
            except Exception as exc:
                log.exception("config_apply_failed", service=self.role, txn=txn)
                return self._vote(txn, ok=False, error=f"applying failed: {str(exc) or type(exc).__name__}")
            self.applied = txn
        log.info("config_reloaded", service=self.role, txn=txn, fingerprint=staged.fingerprint)
        await self._beat()
        return self._vote(txn, ok=True, fingerprint=staged.fingerprint)

    async def _on_announced(self, msg: Msg) -> None:
        try:
            data = envelope.decode(msg.data).data
        except envelope.DecodeError as exc:
            log.error("config_reload_undecodable", service=self.role, error=str(exc))
            return
        txn = data.get("txn")
        if isinstance(txn, str) and txn in self.staged:
            vote = await self.commit(txn)
            await self.bus.nc.publish(subjects.reload_ack(txn), vote.encode())
            return
        if txn is not None and txn == self.applied:
            return
        # not part of this reload (still starting when it was prepared); an announcement without a txn
        # comes from an API that reloads without preparing (an older version): it is taken as it was
        await self._adopt(data.get("fingerprint"), only_if_file_matches=txn is not None)

    async def _adopt(self, announced: object, *, only_if_file_matches: bool) -> None:
        """Take an announced config this participant did not stage: re-read the file, apply it if it
        reads to the announced fingerprint (else the file changed since: the next announcement brings it)."""
        async with self._lock:
            if announced and announced == self.fingerprint():
                return
            try:
                fresh = await asyncio.to_thread(config_mod.reload, self.current())
            except errors.ConfigError as exc:
                log.error("config_reload_failed", service=self.role, error=exc.message)
                return
            fingerprint = config_mod.fingerprint(fresh)
            if only_if_file_matches and fingerprint != announced:
                log.warning("config_reload_not_adopted", service=self.role, announced=announced, file=fingerprint)
                return
            await self._apply(fresh)
        log.info("config_reloaded", service=self.role, fingerprint=fingerprint, caught_up=True)
        await self._beat()

    async def _last_announcement(self) -> dict[str, Any] | None:
        last = await self.bus.last_message(subjects.EVENTS, EVENT_SUBJECT)
        return last[1].data if last is not None else None

    async def _catch_up(self) -> None:
        """A reload announced while this service was starting (after it read its file, before it
        subscribed): without this, a runner still opening its mailboxes would miss it for good."""
        try:
            last = await self._last_announcement()
        except (errors.TransientError, envelope.DecodeError) as exc:
            log.warning("config_reload_catch_up_failed", service=self.role, error=str(exc))
            return
        if last is not None:
            await self._adopt(last.get("fingerprint"), only_if_file_matches=True)

    async def resolve_expired(self) -> None:
        """A staged config whose commit or abort never came: apply it if its reload was announced."""
        now = time.monotonic()
        for txn in [t for t, s in self.staged.items() if s.deadline <= now]:
            try:
                last = await self._last_announcement()
            except (errors.TransientError, envelope.DecodeError) as exc:
                log.warning("config_reload_unresolved", service=self.role, txn=txn, error=str(exc))
                continue  # asked again at the next beat
            if last is not None and last.get("txn") == txn:
                vote = await self.commit(txn)
                log.warning("config_reload_recovered", service=self.role, txn=txn, applied=vote.ok)
                continue
            self.staged.pop(txn, None)
            log.warning("config_reload_dropped", service=self.role, txn=txn, reason="never announced")
            if last is not None:
                await self._adopt(last.get("fingerprint"), only_if_file_matches=True)

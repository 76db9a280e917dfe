"""Leadership records in the `agents` KV bucket: who leads a role, and who stands by.

    leader.<role>              {"kind": "lease", "role", "holder", "source", "host", "pid", "pid_ns",
                                "since", "until", "ttl_s", "renew_s"}
    standby.<role>.<holder>    {"kind": "standby", "role", "holder", "source", "since", "last_seen", "interval_s"}

`Lease` is the dispatcher's authority: one holder at a time by compare-and-set, the pattern of
services/core/reload_coordinator.py `lease` — `create` when the key is absent or deleted, `update`
with the revision last read (taking over an expired lease) or last written (a renewal). A renewal
whose compare-and-set fails means someone else holds it now: the lease is lost. A lease is taken
over when its `until` has passed by the taker's clock, at once when it was deleted (its holder
stopped cleanly), and at once when its holder was a process of this host (same pid namespace)
that no longer exists (a crashed process restarted on the same machine need not wait its own
lease out).

Fencing: the holder counts its lease valid until (when it *sent* its last successful write) +
ttl - margin on its own monotonic clock, so it stops deciding `margin` before any other process can
take the lease (`until` is written as send time + ttl), whatever happens to the wall clock. The
margin (the larger of the renew interval and a fifth of the ttl) is the clock skew tolerated
between hosts.

The projector's authority is a Postgres session lock (services/projector/holder.py); it writes
`leader.projector` with `announce` for visibility only. `status` is what /healthz reports.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import time
from datetime import datetime, timedelta
from typing import Any

import nats.errors
import nats.js.errors
import orjson
from nats.js.kv import KeyValue

from services.core import bus as bus_mod
from services.core import envelope, members, subjects

#: the roles that elect one active process (their services' names)
ROLES = ("dispatcher", "projector")
LEADER_PREFIX = "leader."
STANDBY_PREFIX = "standby."
HOST = socket.gethostname()
#: how many renew intervals a standby record stays fresh (members' rule)
FRESH_INTERVALS = members.FRESH_INTERVALS


def _pid_namespace() -> str | None:
    """This process's pid namespace ("pid:[4026531836]"), None where /proc does not tell."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


PID_NS = _pid_namespace()


def leader_key(role: str) -> str:
    return LEADER_PREFIX + role


def standby_key(role: str, holder: str) -> str:
    return f"{STANDBY_PREFIX}{role}.{holder}"


def holder_id(role: str) -> str:
    """A holder id unique to one service instance (two in one process differ): members' id."""
    return members.member_id(role)


def margin_s(ttl_s: float, renew_s: float) -> float:
    """How long before `until` the holder stops deciding."""
    return max(renew_s, ttl_s / 5)


def lease_record(
    role: str, *, holder: str, source: str, since: datetime, until: datetime, ttl_s: float, renew_s: float
) -> dict[str, Any]:
    return {
        "kind": "lease",
        "role": role,
        "holder": holder,
        "source": source,
        "host": HOST,
        "pid": os.getpid(),
        "pid_ns": PID_NS,
        "since": envelope.rfc3339(since),
        "until": envelope.rfc3339(until),
        "ttl_s": ttl_s,
        "renew_s": renew_s,
    }


def decode(raw: bytes | None) -> dict[str, Any] | None:
    try:
        found = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        return None
    return found if isinstance(found, dict) else None


def until_of(record: dict[str, Any]) -> datetime | None:
    try:
        return envelope.parse_time(str(record["until"]))
    except (KeyError, ValueError):
        return None


def is_expired(record: dict[str, Any] | None, now: datetime) -> bool:
    """No record, an unreadable one, or one whose `until` has passed."""
    until = until_of(record) if record is not None else None
    return until is None or until <= now


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, under another user
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:  # a zombie waiting for its parent's reaper is gone too
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def holder_gone(record: dict[str, Any]) -> bool:
    """Whether the record's holder was a process of this host and pid namespace that no longer exists."""
    pid = record.get("pid")
    if PID_NS is None or record.get("host") != HOST or record.get("pid_ns") != PID_NS:
        return False
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or pid == os.getpid():
        return False
    return _process_gone(pid)


class Lease:
    """One process's hold of `leader.<role>`: `try_acquire` (standby), `renew` (active), `release` (clean stop)."""

    def __init__(
        self,
        bus: bus_mod.Bus,
        role: str,
        *,
        holder: str,
        source: str,
        ttl_s: float,
        renew_s: float,
    ) -> None:
        self.bus = bus
        self.role = role
        self.key = leader_key(role)
        self.holder = holder
        self.source = source
        self.ttl_s = ttl_s
        self.renew_s = renew_s
        self.margin_s = margin_s(ttl_s, renew_s)
        #: the revision of our last write (None: not held)
        self.revision: int | None = None
        self.since: datetime | None = None
        #: time.monotonic() after which this process must not decide
        self._valid_until = 0.0
        #: the record of whoever else held it at our last try (for the logs)
        self.other: dict[str, Any] | None = None

    def valid(self) -> bool:
        return self.revision is not None and time.monotonic() < self._valid_until

    def remaining_s(self) -> float:
        return max(0.0, self._valid_until - time.monotonic()) if self.revision is not None else 0.0

    def _value(self, now: datetime) -> bytes:
        since = self.since or now
        record = lease_record(
            self.role,
            holder=self.holder,
            source=self.source,
            since=since,
            until=now + timedelta(seconds=self.ttl_s),
            ttl_s=self.ttl_s,
            renew_s=self.renew_s,
        )
        return orjson.dumps(record)

    def _held(self, revision: int, sent: float, since: datetime) -> None:
        self.revision = revision
        self.since = since
        self._valid_until = sent + self.ttl_s - self.margin_s

    async def _kv(self) -> KeyValue:
        return await self.bus.kv(subjects.KV_AGENTS)

    async def try_acquire(self) -> bool:
        """One attempt; True when this process holds the lease now. Raises nats errors on NATS trouble."""
        kv = await self._kv()
        sent, now = time.monotonic(), envelope.now()
        self.since = None
        value = self._value(now)
        try:
            self._held(await kv.create(self.key, value), sent, now)
            return True
        except nats.js.errors.KeyWrongLastSequenceError:
            pass
        try:
            entry = await kv.get(self.key)
        except nats.js.errors.NotFoundError:  # released in between: the next try creates it
            return False
        held = decode(entry.value)
        self.other = held
        mine = held is not None and held.get("holder") == self.holder
        if not (mine or is_expired(held, now) or (held is not None and holder_gone(held))):
            return False
        try:
            self._held(await kv.update(self.key, value, last=entry.revision), sent, now)
        except nats.js.errors.KeyWrongLastSequenceError:  # another standby was quicker
            return False
        return True

    async def renew(self) -> bool:
        """Extend the lease; False when it is lost for sure (someone else wrote it). Raises on NATS trouble
        (the outcome unknown: the caller retries while `valid()`)."""
        if self.revision is None or self.since is None:
            return False
        kv = await self._kv()
        sent = time.monotonic()
        try:
            self._held(await kv.update(self.key, self._value(envelope.now()), last=self.revision), sent, self.since)
            return True
        except nats.js.errors.KeyWrongLastSequenceError:
            pass
        # our last write may have been stored while its answer was lost: a record with our holder id is ours
        try:
            entry = await kv.get(self.key)
        except nats.js.errors.NotFoundError:
            entry = None
        held = decode(entry.value) if entry is not None else None
        if entry is None or held is None or held.get("holder") != self.holder:
            self.other = held
            self.forget()
            return False
        try:
            self._held(await kv.update(self.key, self._value(envelope.now()), last=entry.revision), sent, self.since)
            return True
        except nats.js.errors.KeyWrongLastSequenceError:
            self.forget()
            return False

    def forget(self) -> None:
        """No longer held (lost, or released)."""
        self.revision = None
        self._valid_until = 0.0

    async def release(self) -> None:
        """Delete the record (only if it is still ours), so a standby takes over at once."""
        revision = self.revision
        self.forget()
        if revision is None:
            return
        kv = await self._kv()
        try:
            await kv.delete(self.key, last=revision)
        except nats.js.errors.BadRequestError:  # a wrong last sequence: taken over meanwhile, not ours to delete
            pass


class Standby:
    """The presence record of a process waiting to lead `role`, so /healthz can count standbys."""

    def __init__(self, bus: bus_mod.Bus, role: str, *, holder: str, source: str, interval_s: float) -> None:
        self.bus = bus
        self.role = role
        self.key = standby_key(role, holder)
        self.holder = holder
        self.source = source
        self.interval_s = interval_s
        self.since = envelope.rfc3339(envelope.now())
        self._next = 0.0
        self._written = False

    async def beat(self) -> None:
        """Write the record, at most once per interval."""
        if time.monotonic() < self._next:
            return
        self._next = time.monotonic() + self.interval_s
        record = {
            "kind": "standby",
            "role": self.role,
            "holder": self.holder,
            "source": self.source,
            "since": self.since,
            "last_seen": envelope.rfc3339(envelope.now()),
            "interval_s": self.interval_s,
        }
        kv = await self.bus.kv(subjects.KV_AGENTS)
        await kv.put(self.key, orjson.dumps(record))
        self._written = True

    async def clear(self) -> None:
        """Delete the record (on election and on a clean stop)."""
        self._next = 0.0
        if not self._written:
            return
        kv = await self.bus.kv(subjects.KV_AGENTS)
        await kv.delete(self.key)
        self._written = False


async def announce(bus: bus_mod.Bus, role: str, record: dict[str, Any]) -> None:
    """Write `leader.<role>` unconditionally (a role whose authority lives elsewhere, e.g. the projector's lock)."""
    kv = await bus.kv(subjects.KV_AGENTS)
    await kv.put(leader_key(role), orjson.dumps(record))


async def withdraw(bus: bus_mod.Bus, role: str, holder: str) -> None:
    """Delete `leader.<role>` if `holder` wrote it last."""
    kv = await bus.kv(subjects.KV_AGENTS)
    try:
        entry = await kv.get(leader_key(role))
    except nats.js.errors.NotFoundError:
        return
    held = decode(entry.value)
    if held is not None and held.get("holder") == holder:
        try:
            await kv.delete(leader_key(role), last=entry.revision)
        except nats.js.errors.BadRequestError:  # rewritten meanwhile by the next holder
            pass


@dataclasses.dataclass(frozen=True, slots=True)
class RoleStatus:
    """What /healthz says of one role: the leader's record (None: nobody) and the fresh standbys."""

    role: str
    leader: dict[str, Any] | None
    standbys: list[dict[str, Any]]
    now: datetime

    @property
    def held(self) -> bool:
        return self.leader is not None and not is_expired(self.leader, self.now)

    def public(self, *, admin: bool) -> dict[str, Any]:
        """The report: held, since, until, standbys; the holder's and standbys' names only for an admin."""
        out: dict[str, Any] = {"held": self.held, "since": None, "until": None, "standbys": len(self.standbys)}
        if self.leader is not None:
            out["since"] = self.leader.get("since")
            out["until"] = self.leader.get("until")
            if admin:
                out["holder"] = self.leader.get("source")
        if admin:
            out["standby_sources"] = sorted(str(s.get("source")) for s in self.standbys)
        return out


async def status(bus: bus_mod.Bus, role: str) -> RoleStatus:
    """The leader record of `role` and its fresh standbys (raises nats errors when the bucket is unreadable)."""
    kv = await bus.kv(subjects.KV_AGENTS)
    try:
        entry = await kv.get(leader_key(role))
        leader = decode(entry.value)
    except nats.js.errors.NotFoundError:
        leader = None
    prefix = f"$KV.{subjects.KV_AGENTS}."
    info = await bus.js.stream_info(f"KV_{subjects.KV_AGENTS}", subjects_filter=f"{prefix}{STANDBY_PREFIX}{role}.*")
    keys = [subject[len(prefix) :] for subject in (info.state.subjects or {})]

    async def read(key: str) -> dict[str, Any] | None:
        try:
            return decode((await kv.get(key)).value)
        except nats.errors.Error:
            return None

    now = envelope.now()
    found = await asyncio.gather(*(read(key) for key in keys))
    standbys = [r for r in found if r is not None and r.get("kind") == "standby" and members.is_fresh(r, now)]
    if leader is not None:  # the active's own standby record, should its goodbye have been lost
        standbys = [s for s in standbys if s.get("holder") != leader.get("holder")]
    return RoleStatus(role=role, leader=leader, standbys=standbys, now=now)

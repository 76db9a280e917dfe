"""Schedule specs: `plugins.<p>.schedules[i]` of the config parsed into `Schedule`s, and the
pure time arithmetic of when each one fires. No I/O and no clock here; the dispatcher's
scheduler loop (services/dispatcher/schedules.py) owns both.

A schedule has exactly one of

    every: 5m               nominal fires at anchor + k·every (k ≥ 1)
    cron: "0 7 * * *"       croniter expression (5 fields, or 6 with seconds), in `timezone` (default UTC)
    at: 2026-03-01T07:00Z   once, at that RFC 3339 time
    after: 10m              once, `after` past the anchor

The anchor is the moment the scheduler first saw the schedule (its `schedule.armed` event).
`jitter` delays each fire by a deterministic amount in [0, jitter) derived from the fire's
nominal time, so a restarted scheduler picks the same delay.

Ductile's constraints are checked per fire, at its nominal time in `timezone` (UTC when unset):
`only_between: "HH:MM-HH:MM"` (end exclusive; a start after the end spans midnight) and
`not_on: [sat, sun, 0..7]` (0 and 7 are Sunday). A fire outside them is recorded as skipped with
Ductile's reason (`outside_time_window`, `outside_day_constraint`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from services.core import durations

KINDS = ("every", "cron", "at", "after")
#: how many missed fires `catch_up: true` runs at most after downtime (older ones are skipped, and recorded)
MAX_CATCH_UP = 10
#: Ductile's `catch_up` words: how many missed fires each runs (run_all is capped at 100, as in Ductile)
CATCH_UP_WORDS = {"skip": 0, "run_once": 1, "run_all": 100}
IF_RUNNING = ("skip", "queue", "cancel")
_WEEKDAYS = {
    "sun": 6,
    "sunday": 6,
    "mon": 0,
    "monday": 0,
    "tue": 1,
    "tues": 1,
    "tuesday": 1,
    "wed": 2,
    "wednesday": 2,
    "thu": 3,
    "thurs": 3,
    "thursday": 3,
    "fri": 4,
    "friday": 4,
    "sat": 5,
    "saturday": 5,
}
_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CLOCK = re.compile(r"^\s*([01]?\d|2[0-3]):([0-5]\d)\s*$")
#: a fire later than this (plus its jitter) counts as missed when `catch_up` is false
MISFIRE_GRACE_S = 60.0
_ID = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    plugin: str
    id: str
    #: one of KINDS
    kind: str
    #: the spec as configured ("5m", "0 7 * * *", an RFC 3339 time)
    spec: str
    command: str
    payload: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    jitter_s: float = 0.0
    #: how many missed fires run after downtime (0: none; `true` 10, run_once 1, run_all 100)
    catch_up_limit: int = 0
    #: "skip": no fire while the previous fire's job is not final; "queue": fire regardless;
    #: "cancel": cancel the previous fire's job if it is not final, then fire
    if_running: str = "skip"
    timezone: str | None = None
    #: Ductile's `only_between` as minutes of the day (start, end), end exclusive
    only_between: tuple[int, int] | None = None
    #: Ductile's `not_on` as Python weekdays (Monday 0 … Sunday 6)
    not_on: frozenset[int] = frozenset()
    #: the plugin's `max_outstanding_polls` (Ductile): with `if_running: queue`, no fire while this many
    #: of the schedule's jobs are not final; None (not set): no limit
    max_outstanding: int | None = None
    #: where it sits in the config, e.g. "plugins.echo.schedules[0]"
    where: str = ""
    interval_s: float | None = None
    at: datetime | None = None

    @property
    def key(self) -> str:
        return f"{self.plugin}:{self.id}"

    @property
    def catch_up(self) -> bool:
        return self.catch_up_limit > 0

    def constraint_at(self, nominal: datetime) -> str | None:
        """Ductile's reason when `only_between`/`not_on` rule the fire at `nominal` out, else None."""
        if self.only_between is None and not self.not_on:
            return None
        local = nominal.astimezone(self._zone())
        if local.weekday() in self.not_on:
            return "outside_day_constraint"
        if self.only_between is not None:
            start, end = self.only_between
            minute = local.hour * 60 + local.minute
            inside = start <= minute < end if start < end else (minute >= start or minute < end)
            if not inside:
                return "outside_time_window"
        return None

    def describe(self) -> dict[str, Any]:
        out = {
            "plugin": self.plugin,
            "id": self.id,
            self.kind: self.spec,
            "command": self.command,
            "payload": dict(self.payload),
            "jitter_s": self.jitter_s,
            "catch_up": self.catch_up,
            "catch_up_limit": self.catch_up_limit,
            "if_running": self.if_running,
            "timezone": self.timezone,
        }
        if self.only_between is not None:
            out["only_between"] = _window_text(self.only_between)
        if self.not_on:
            out["not_on"] = [_DAY_NAMES[d] for d in sorted(self.not_on)]
        return out

    def jitter_for(self, nominal: datetime) -> timedelta:
        """The deterministic delay of the fire at `nominal`, in [0, jitter)."""
        if self.jitter_s <= 0:
            return timedelta(0)
        digest = hashlib.sha256(f"{self.key}:{fire_label(nominal)}".encode()).digest()
        fraction = int.from_bytes(digest[:8], "big") / 2**64
        return timedelta(seconds=fraction * self.jitter_s)

    def due(self, after: datetime, until: datetime, *, anchor: datetime, limit: int) -> tuple[list[datetime], bool]:
        """The latest `limit` nominal fire times in (after, until], oldest first, and whether older ones exist."""
        if until <= after:
            return [], False
        if self.kind == "every":
            assert self.interval_s
            return _every_due(anchor, self.interval_s, after, until, limit)
        if self.kind == "cron":
            return self._cron_due(after, until, limit)
        once = self.at if self.kind == "at" else anchor + timedelta(seconds=self.interval_s or 0)
        assert once is not None
        return ([once], False) if after < once <= until and limit > 0 else ([], False)

    def next_after(self, after: datetime, *, anchor: datetime) -> datetime | None:
        """The first nominal fire time strictly after `after` (None: a one-shot that is spent)."""
        if self.kind == "every":
            assert self.interval_s
            k = max(0, int((after - anchor).total_seconds() // self.interval_s)) + 1
            moment = anchor + timedelta(seconds=k * self.interval_s)
            while moment <= after:  # float rounding
                k += 1
                moment = anchor + timedelta(seconds=k * self.interval_s)
            return moment
        if self.kind == "cron":
            zone = self._zone()
            it = croniter(self.spec, after.astimezone(zone))
            return it.get_next(datetime).astimezone(UTC).replace(fold=0)
        once = self.at if self.kind == "at" else anchor + timedelta(seconds=self.interval_s or 0)
        return once if once is not None and once > after else None

    def _zone(self) -> Any:
        return ZoneInfo(self.timezone) if self.timezone else UTC

    def _cron_due(self, after: datetime, until: datetime, limit: int) -> tuple[list[datetime], bool]:
        zone = self._zone()
        # cron times are whole seconds: the first get_prev from (until, floored, + 1 s) is the latest ≤ until
        start = until.replace(microsecond=0) + timedelta(seconds=1)
        it = croniter(self.spec, start.astimezone(zone))
        out: list[datetime] = []
        while True:
            moment = it.get_prev(datetime).astimezone(UTC).replace(fold=0)
            if moment <= after:
                return out[::-1], False
            if len(out) >= limit:
                return out[::-1], True
            out.append(moment)


def _every_due(
    anchor: datetime, interval_s: float, after: datetime, until: datetime, limit: int
) -> tuple[list[datetime], bool]:
    first = max(1, int((after - anchor).total_seconds() // interval_s) + 1)
    last = int((until - anchor).total_seconds() // interval_s)
    if last < first or limit <= 0:
        return [], last >= first
    low = max(first, last - limit + 1)
    times = [anchor + timedelta(seconds=k * interval_s) for k in range(low, last + 1)]
    return [t for t in times if after < t <= until], low > first


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class State:
    """A schedule's state, read from the last event on its subject (evt.schedule.<plugin>.<id>)."""

    #: that event's stream sequence (the expected last subject sequence of the next decision)
    seq: int
    #: every nominal fire time up to this one has been decided (fired or skipped)
    at: datetime
    anchor: datetime
    last_fired_at: datetime | None = None
    last_job_id: str | None = None
    #: the type of the last decision: schedule.armed | schedule.fired | schedule.skipped
    last_type: str = "schedule.armed"
    #: fired jobs not yet seen final (kept only for a `max_outstanding_polls` limit)
    outstanding: tuple[str, ...] = ()

    @classmethod
    def from_event(cls, seq: int, event_type: str, data: Mapping[str, Any]) -> State:
        fired = data.get("last_fired_at")
        return cls(
            seq=seq,
            at=parse_label(data["at"]),
            anchor=parse_label(data["anchor"]),
            last_fired_at=parse_label(fired) if fired else None,
            last_job_id=data.get("last_job_id"),
            last_type=event_type,
            outstanding=tuple(data.get("outstanding") or ()),
        )

    def data(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "at": fire_label(self.at),
            "anchor": fire_label(self.anchor),
            "last_fired_at": fire_label(self.last_fired_at) if self.last_fired_at else None,
            "last_job_id": self.last_job_id,
        }
        if self.outstanding:
            out["outstanding"] = list(self.outstanding)
        return out


def next_fire(schedule: Schedule, state: State | None, now: datetime) -> datetime | None:
    """When the schedule fires next (nominal time plus jitter); None for a spent one-shot."""
    after = state.at if state else now
    nominal = schedule.next_after(after, anchor=state.anchor if state else now)
    return nominal + schedule.jitter_for(nominal) if nominal is not None else None


def parse_label(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def fire_label(nominal: datetime) -> str:
    """The nominal time as it appears in event ids: RFC 3339, UTC, microseconds."""
    return nominal.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_all(plugins: Mapping[str, Any]) -> tuple[Schedule, ...]:
    """Every schedule of every plugin (`plugins:` of the config document); ValueError names the place."""
    out: list[Schedule] = []
    for plugin, spec in plugins.items():
        seen: set[str] = set()
        limit = (spec or {}).get("max_outstanding_polls")
        for i, raw in enumerate((spec or {}).get("schedules") or []):
            schedule = parse_one(str(plugin), i, raw)
            if limit is not None:  # Ductile: a value <= 0 means 1
                schedule = dataclasses.replace(schedule, max_outstanding=max(1, int(limit)))
            if schedule.id in seen:
                raise ValueError(f"{schedule.where}: duplicate schedule id {schedule.id!r} in plugin {plugin!r}")
            seen.add(schedule.id)
            out.append(schedule)
    return tuple(out)


def parse_one(plugin: str, index: int, raw: Mapping[str, Any]) -> Schedule:
    where = f"plugins.{plugin}.schedules[{index}]"
    kinds = [k for k in KINDS if raw.get(k) is not None]
    if len(kinds) != 1:
        found = ", ".join(kinds) or "none"
        raise ValueError(f"{where}: needs exactly one of every, cron, at, after (found {found})")
    kind = kinds[0]
    schedule_id = str(raw.get("id") or "default")
    if not _ID.match(schedule_id):
        raise ValueError(f"{where}: schedule id {schedule_id!r} may only hold letters, digits, '_' and '-'")
    if not _ID.match(plugin):
        raise ValueError(f"{where}: plugin name {plugin!r} cannot carry schedules (letters, digits, '_', '-' only)")
    value = raw[kind]
    interval_s: float | None = None
    at: datetime | None = None
    timezone = raw.get("timezone")
    try:
        if timezone:
            ZoneInfo(str(timezone))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{where}: unknown timezone {timezone!r}") from None
    try:
        jitter_s = durations.parse_seconds(raw.get("jitter", 0))
        if kind in ("every", "after"):
            interval_s = durations.parse_seconds(value)
            if kind == "every" and interval_s <= 0:
                raise ValueError("every must be a positive duration")
        elif kind == "cron":
            if not isinstance(value, str) or not croniter.is_valid(value):
                raise ValueError(f"invalid cron expression {value!r}")
        else:
            at = _parse_at(value)
        only_between = _parse_window(raw.get("only_between"))
        not_on = frozenset(_parse_weekday(day) for day in _as_list(raw.get("not_on")))
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    if_running = str(raw.get("if_running") or "skip")  # Ductile's default
    if if_running not in IF_RUNNING:
        raise ValueError(f"{where}: if_running must be one of {', '.join(IF_RUNNING)}, not {if_running!r}")
    return Schedule(
        plugin=plugin,
        id=schedule_id,
        kind=kind,
        spec=str(value),
        command=str(raw["command"]),
        payload=dict(raw.get("payload") or {}),
        jitter_s=jitter_s,
        catch_up_limit=_catch_up_limit(raw.get("catch_up")),
        if_running=if_running,
        timezone=str(timezone) if timezone else None,
        where=where,
        interval_s=interval_s,
        at=at,
        only_between=only_between,
        not_on=not_on,
    )


def _catch_up_limit(value: Any) -> int:
    if isinstance(value, str):
        return CATCH_UP_WORDS[value]
    return MAX_CATCH_UP if value else 0


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _parse_window(value: Any) -> tuple[int, int] | None:
    """Ductile's `only_between: "HH:MM-HH:MM"` (start ≠ end) as minutes of the day."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    parts = str(value).split("-")
    if len(parts) != 2:
        raise ValueError(f"invalid only_between {value!r}: expected HH:MM-HH:MM")
    bounds = []
    for part in parts:
        match = _CLOCK.match(part)
        if match is None:
            raise ValueError(f"invalid only_between {value!r}: expected HH:MM")
        bounds.append(int(match.group(1)) * 60 + int(match.group(2)))
    if bounds[0] == bounds[1]:
        raise ValueError(f"invalid only_between {value!r}: start and end cannot be equal")
    return bounds[0], bounds[1]


def _window_text(window: tuple[int, int] | None) -> str | None:
    if window is None:
        return None
    return "-".join(f"{m // 60:02d}:{m % 60:02d}" for m in window)


def _parse_weekday(day: Any) -> int:
    """A `not_on` entry (Ductile: sun…sat, long names, tue/tues, thu/thurs, or 0-6 with 7 = Sunday)."""
    if isinstance(day, bool):
        raise ValueError(f"unsupported weekday {day!r}")
    if isinstance(day, float) and day == int(day):
        day = int(day)
    if isinstance(day, int):
        number = 0 if day == 7 else day
        if not 0 <= number <= 6:
            raise ValueError(f"weekday number {number} out of range [0,6] or 7 for sunday")
        return (number - 1) % 7  # Go's Sunday=0 → Python's Sunday=6
    if isinstance(day, str) and day.strip().lower() in _WEEKDAYS:
        return _WEEKDAYS[day.strip().lower()]
    raise ValueError(f"unknown weekday {day!r}")


def _parse_at(value: Any) -> datetime:
    if isinstance(value, datetime):  # YAML may already have parsed it
        moment = value
    else:
        text = str(value).strip()
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError(f"at must be an RFC 3339 time with a zone, not {value!r}") from None
    if moment.tzinfo is None:
        raise ValueError(f"at must carry a zone (Z or an offset): {value!r}")
    return moment.astimezone(UTC)


def check_commands(schedules: tuple[Schedule, ...], commands_of: Mapping[str, Any]) -> None:
    """ValueError when a schedule names a command its (found) plugin does not have."""
    for schedule in schedules:
        commands = commands_of.get(schedule.plugin)
        if commands is not None and schedule.command not in commands:
            raise ValueError(f"{schedule.where}: plugin {schedule.plugin!r} has no command {schedule.command!r}")

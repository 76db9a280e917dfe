"""The scheduler loop: fires the jobs of `plugins.<p>.schedules` (see services/core/schedules.py).

Schedule state lives in the event log, one subject per schedule:

    evt.schedule.<plugin>.<id>   schedule.armed    first sight: the anchor; nothing before it fires
                                 schedule.fired    id <plugin>:<id>:<nominal time>, with the job it submitted
                                 schedule.skipped  missed fires (catch_up false, or beyond its limit),
                                                   a fire while the previous job runs (if_running: skip),
                                                   or outside only_between / on a not_on day

Each decision is published with the subject's expected last sequence (optimistic
concurrency), so two dispatchers never both decide the same fire, and a restarted one reads
the last decision and carries on: no double fire, no silent skip. A fire is claimed first,
then its job is submitted (job id derived from the fire, so a resubmission after a crash
between the two is a no-op); on start, a claimed fire whose job never appeared is submitted.
`if_running: cancel` sends `job.cancel` for the previous fire's job when it is not final (the
dispatcher's command consumer decides it, as for a cancel from the API), then fires.

The clock is injected (`clock()` → aware datetime) so tests move time; the loop wakes every
`interval_s` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from services.core import bus as bus_mod
from services.core import config as config_mod
from services.core import envelope, errors, leadership, logging, subjects
from services.core import schedules as specs
from services.dispatcher import publishing, routing

log = logging.get("scheduler")

Clock = Callable[[], datetime]
Published = list[tuple[str, envelope.Envelope]]
SubmitDecider = Callable[[envelope.Envelope], Awaitable[Published]]
JobState = Callable[[str], Awaitable[dict[str, Any] | None]]

FINAL_STATUSES = frozenset({"succeeded", "dead", "skipped", "cancelled"})
SUBMITTED_BY = "schedule"


def utc_now() -> datetime:
    return datetime.now(UTC)


def job_id_for(schedule: specs.Schedule, nominal: datetime) -> str:
    """The job a fire submits: the same fire always gives the same job."""
    return routing.derived_id("schedule", schedule.plugin, schedule.id, specs.fire_label(nominal))


def is_final(job: dict[str, Any] | None) -> bool:
    """Is the job done (or gone)? A rejected submit counts as done; a failed attempt awaits its retry."""
    if job is None:
        return True
    status = job.get("status")
    return status in FINAL_STATUSES or (status == "failed" and str(job.get("last_error") or "").startswith("rejected:"))


def submit_command(schedule: specs.Schedule, nominal: datetime, *, source: str) -> envelope.Envelope:
    job_id = job_id_for(schedule, nominal)
    payload = dict(schedule.payload)
    data: dict[str, Any] = {
        "plugin": schedule.plugin,
        "command": schedule.command,
        "payload": payload,
        "submitted_by": SUBMITTED_BY,
        "schedule": {"id": schedule.id, "at": specs.fire_label(nominal)},
    }
    if schedule.command == "handle":
        data["event"] = {"type": f"schedule.{schedule.id}", "payload": payload}
    return envelope.make(
        "job.submit", source=source, job_id=job_id, id=f"{job_id}:submit", correlation_id=job_id, data=data
    )


class Scheduler:
    def __init__(
        self,
        bus: bus_mod.Bus,
        config: Callable[[], config_mod.Config],
        *,
        submit: SubmitDecider,
        job_state: JobState,
        source: str,
        clock: Clock | None = None,
        interval_s: float = 1.0,
        fence: publishing.Fence = publishing.unfenced,
    ) -> None:
        self.bus = bus
        #: raises when this dispatcher may no longer decide (checked before every store)
        self.fence = fence
        self.config = config
        self.submit = submit
        self.job_state = job_state
        self.source = source
        self.clock = clock or utc_now
        self.interval_s = interval_s
        self._parsed: tuple[config_mod.Config, tuple[specs.Schedule, ...]] | None = None
        self._states: dict[str, specs.State] = {}
        #: fires claimed whose job submit has not gone through yet (retried every tick)
        self._unsubmitted: dict[str, envelope.Envelope] = {}

    def schedules(self) -> tuple[specs.Schedule, ...]:
        """The schedules of the current config's enabled plugins (re-parsed after a reload)."""
        config = self.config()
        if self._parsed is None or self._parsed[0] is not config:
            self._parsed = (config, tuple(s for s in config.schedules if config.plugin(s.plugin).enabled))
        return self._parsed[1]

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.tick()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval_s)

    async def tick(self) -> None:
        """Decide every schedule's due fires as of `clock()`; one schedule's trouble never stops the others.
        Deposed (the lease ran out) ends the tick: the next active decides what is left."""
        try:
            await self._tick_all()
        except leadership.Deposed:
            self._states.clear()

    async def _tick_all(self) -> None:
        for key, cmd in list(self._unsubmitted.items()):
            try:
                await self._submit(cmd)
                self._unsubmitted.pop(key, None)
            except leadership.Deposed:
                raise
            except Exception as exc:
                log.warning("schedule_submit_failed", job_id=key, error=str(exc) or type(exc).__name__)
        for schedule in self.schedules():
            try:
                await self._tick_one(schedule)
            except leadership.Deposed:
                raise
            except errors.Conflict:
                self._states.pop(schedule.key, None)  # another decision got in first: re-read next tick
            except errors.TransientError as exc:
                log.warning("schedule_tick_failed", plugin=schedule.plugin, schedule=schedule.id, error=exc.message)
                self._states.pop(schedule.key, None)
            except Exception:
                log.exception("schedule_tick_crashed", plugin=schedule.plugin, schedule=schedule.id)
                self._states.pop(schedule.key, None)

    # --- state ------------------------------------------------------------------------

    async def _state(self, schedule: specs.Schedule) -> specs.State:
        state = self._states.get(schedule.key)
        if state is not None:
            return state
        subject = subjects.schedule_event(schedule.plugin, schedule.id)
        last = await self.bus.last_message(subjects.EVENTS, subject)
        if last is None:
            now = self.clock()
            state = specs.State(seq=0, at=now, anchor=now)
            state = await self._decide(schedule, "schedule.armed", f"{schedule.key}:armed", state, {})
            log.info("schedule_armed", plugin=schedule.plugin, schedule=schedule.id, anchor=specs.fire_label(now))
        else:
            seq, env = last
            state = specs.State.from_event(seq, env.type, env.data)
            self._states[schedule.key] = state
            await self._recover(schedule, state)
        return state

    async def _recover(self, schedule: specs.Schedule, state: specs.State) -> None:
        """A fire claimed by a dispatcher that died before its job was submitted: submit it now."""
        if state.last_type != "schedule.fired" or not state.last_job_id or state.last_fired_at is None:
            return
        if await self.job_state(state.last_job_id) is None:
            log.warning(
                "schedule_fire_resubmitted", plugin=schedule.plugin, schedule=schedule.id, job_id=state.last_job_id
            )
            await self._submit(submit_command(schedule, state.last_fired_at, source=self.source))

    async def _decide(
        self, schedule: specs.Schedule, event_type: str, event_id: str, state: specs.State, extra: dict[str, Any]
    ) -> specs.State:
        """Publish one decision (conditional on the subject's last sequence) and keep the new state."""
        env = envelope.make(
            event_type,
            source=self.source,
            id=event_id,
            job_id=extra.get("job_id"),
            data={"plugin": schedule.plugin, "schedule_id": schedule.id, **state.data(), **extra},
        )
        self.fence()
        ack = await self.bus.publish(
            subjects.schedule_event(schedule.plugin, schedule.id), env, expected_last_subject_seq=state.seq
        )
        if ack.duplicate:
            raise errors.Conflict(f"decision {event_id} was already published")
        state = dataclasses.replace(state, seq=int(ack.seq), last_type=event_type)
        self._states[schedule.key] = state
        return state

    # --- one tick of one schedule -----------------------------------------------------------

    async def _tick_one(self, schedule: specs.Schedule) -> None:
        state = await self._state(schedule)
        now = self.clock()
        limit = schedule.catch_up_limit + 1 if schedule.catch_up else 2
        times, older = schedule.due(state.at, now, anchor=state.anchor, limit=limit)
        ripe: list[datetime] = []
        for nominal in times:
            if nominal + schedule.jitter_for(nominal) > now:
                break
            ripe.append(nominal)
        if not ripe:
            return
        if schedule.catch_up:
            keep = schedule.catch_up_limit
            fire = ripe[-keep:]
            skip = ripe[:-keep]
            reason = f"missed: more than {keep} fires behind (catch_up runs the latest {keep})"
        else:
            latest = ripe[-1]
            late_s = (now - latest - schedule.jitter_for(latest)).total_seconds()
            on_time = late_s <= specs.MISFIRE_GRACE_S
            fire = [latest] if on_time else []
            skip = ripe[:-1] if on_time else ripe
            reason = "missed while no dispatcher ran (catch_up: false)"
        if skip:
            last_skipped = skip[-1]
            state = dataclasses.replace(state, at=last_skipped)
            state = await self._decide(
                schedule,
                "schedule.skipped",
                f"{schedule.key}:{specs.fire_label(last_skipped)}:skipped",
                state,
                {"reason": reason, "missed": len(skip), "more_missed_before": older},
            )
            log.info("schedule_missed", plugin=schedule.plugin, schedule=schedule.id, missed=len(skip))
        # a batch of missed fires is Ductile's startup catch-up, enqueued without the if_running check
        # (scheduler.go catchUpSchedule): else `skip` would drop all but the first of them
        batch = len(fire) > 1
        for nominal in fire:
            state = await self._fire(schedule, state, nominal, now, catching_up=batch)

    async def _fire(
        self,
        schedule: specs.Schedule,
        state: specs.State,
        nominal: datetime,
        now: datetime,
        *,
        catching_up: bool = False,
    ) -> specs.State:
        label = specs.fire_label(nominal)
        outside = schedule.constraint_at(nominal)
        if outside is not None:
            state = dataclasses.replace(state, at=nominal)
            return await self._decide(
                schedule, "schedule.skipped", f"{schedule.key}:{label}:skipped", state, {"reason": outside}
            )
        previous = state.last_job_id
        busy = (
            not catching_up
            and schedule.if_running != "queue"
            and previous
            and not is_final(await self.job_state(previous))
        )
        if busy and schedule.if_running == "skip":
            state = dataclasses.replace(state, at=nominal)
            return await self._decide(
                schedule,
                "schedule.skipped",
                f"{schedule.key}:{label}:skipped",
                state,
                {"reason": f"previous job {previous} is still running (if_running: skip)"},
            )
        outstanding: tuple[str, ...] = ()
        if schedule.if_running == "queue" and schedule.max_outstanding is not None:
            outstanding = tuple([j for j in state.outstanding if not is_final(await self.job_state(j))])
            if len(outstanding) >= schedule.max_outstanding:
                state = dataclasses.replace(state, at=nominal, outstanding=outstanding)
                return await self._decide(
                    schedule,
                    "schedule.skipped",
                    f"{schedule.key}:{label}:skipped",
                    state,
                    {
                        "reason": "outstanding_limit",
                        "outstanding": len(outstanding),
                        "max_outstanding_polls": schedule.max_outstanding,
                    },
                )
        cmd = submit_command(schedule, nominal, source=self.source)
        assert cmd.job_id is not None
        extra: dict[str, Any] = {
            "job_id": cmd.job_id,
            "command": schedule.command,
            "fire_at": specs.fire_label(nominal + schedule.jitter_for(nominal)),
            "fired_at": specs.fire_label(now),
        }
        if busy and previous:
            # before the fire is claimed: a crash in between at worst cancels a job the next fire cancels too
            await self._cancel(previous, schedule, label)
            extra["cancelled_job_id"] = previous
        if schedule.max_outstanding is not None:
            outstanding = (*outstanding, cmd.job_id)
        state = dataclasses.replace(
            state, at=nominal, last_fired_at=nominal, last_job_id=cmd.job_id, outstanding=outstanding
        )
        state = await self._decide(schedule, "schedule.fired", f"{schedule.key}:{label}", state, extra)
        log.info("schedule_fired", plugin=schedule.plugin, schedule=schedule.id, at=label, job_id=cmd.job_id)
        try:
            await self._submit(cmd)
        except errors.TransientError:
            self._unsubmitted[cmd.job_id] = cmd
            raise
        return state

    async def _cancel(self, job_id: str, schedule: specs.Schedule, label: str) -> None:
        """Ask the dispatcher to cancel the previous fire's job (`if_running: cancel`), as the API would."""
        cmd = envelope.make(
            "job.cancel",
            source=self.source,
            job_id=job_id,
            id=f"{job_id}:cancel",
            correlation_id=job_id,
            data={"reason": f"cancelled by schedule {schedule.key} firing at {label} (if_running: cancel)"},
        )
        self.fence()
        await self.bus.publish(subjects.job_command(job_id, "cancel"), cmd)
        log.info("schedule_cancelled_previous", plugin=schedule.plugin, schedule=schedule.id, job_id=job_id)

    async def _submit(self, cmd: envelope.Envelope) -> None:
        out = await self.submit(cmd)
        if out:
            await publishing.publish_decisions(self.bus, out, fence=self.fence)

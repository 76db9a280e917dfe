"""Dispatcher service: the thin I/O shell around the pure decisions.

    cmd.>                          → submit / cancel decisions → evt.job.* + work.*
    evt.job.*.{failed,timed_out}   → retry (delayed work) or dead letter; breakers
    evt.job.*.succeeded            → breakers
    delay.>                        → due work items released onto work.*
    ingest.>                       → evt.ingest.accepted + pipelines, or evt.ingest.rejected  (ingest.py)
    the clock                      → scheduled jobs, decisions on evt.schedule.*               (schedules.py)

Several dispatchers may run; one decides. It holds the lease `leader.dispatcher` (services/core/leases.py)
and alone binds the consumers and runs the clock; the others stand by and take over when the lease
runs out or is released (services/core/leadership.py). Every store is fenced: none after the lease's
validity ran out by this process's clock.

Every input is acked only after everything it caused is stored (publish, then ack); the
deterministic event ids make a redelivered input's second publish a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from contextlib import AbstractContextManager
from typing import Any

import nats.js.errors
import orjson
from nats.aio.msg import Msg
from nats.js import api

from services.core import bus as bus_mod
from services.core import config as config_mod
from services.core import (
    consumers,
    envelope,
    jobstate,
    leadership,
    leases,
    lifecycle,
    logging,
    metrics,
    reloads,
    scopes,
    subjects,
)
from services.dispatcher import breaker, cancels, decisions, ingest, pipeline_runs, publishing, retries, schedules

log = logging.get("dispatcher")

OUTCOME_SUBJECTS = [
    "evt.job.*.failed",
    "evt.job.*.timed_out",
    "evt.job.*.succeeded",
    "evt.job.*.dead",
    "evt.job.*.skipped",
    "evt.job.*.cancelled",
    "evt.job.*.rejected",
]
ROUTED_FINALS = frozenset(pipeline_runs.FINAL_CHILD)
#: the dispatcher's durable consumers (stream, name): only the active one fetches from them
DURABLES = (
    (subjects.EVENTS, subjects.DISPATCHER_OUTCOMES),
    (subjects.WORK, subjects.DISPATCHER_DELAYS),
    (subjects.COMMANDS, subjects.DISPATCHER_COMMANDS),
    (subjects.INGEST, subjects.DISPATCHER_INGEST),
)


def _job_logged(env: envelope.Envelope) -> AbstractContextManager[None]:
    """The ids of the job `env` concerns, bound onto the log lines of deciding it."""
    return logging.job_context(
        env.job_id, correlation_id=env.correlation_id, plugin=env.data.get("plugin"), command=env.data.get("command")
    )


class Dispatcher(lifecycle.Service):
    name = "dispatcher"

    def __init__(
        self,
        config: config_mod.Config,
        *,
        bus: bus_mod.Bus | None = None,
        clock: schedules.Clock | None = None,
        schedule_interval_s: float = 1.0,
    ) -> None:
        super().__init__()
        self.clock = clock or schedules.utc_now
        self.schedule_interval_s = schedule_interval_s
        self.scheduler: schedules.Scheduler | None = None
        self.config = config
        self.bus = bus
        self._own_bus = bus is None
        self.source = config_mod.instance_name("dispatcher")
        self.catalog = config_mod.plugin_catalog(config)
        self.runs: pipeline_runs.PipelineRuns | None = None
        self._breakers: dict[str, breaker.BreakerState] = {}
        self.participant: reloads.Participant | None = None
        self.lease: leases.Lease | None = None
        self.leadership: leadership.Leadership | None = None

    async def start(self) -> None:
        self.bus = await bus_mod.open_for(self.config, name=self.source, bus=self.bus)
        holder = leases.holder_id(self.name)
        ttl_s, renew_s = self.config.leader_lease_ttl_s, self.config.leader_lease_renew_s
        self.lease = leases.Lease(self.bus, self.name, holder=holder, source=self.source, ttl_s=ttl_s, renew_s=renew_s)
        self.leadership = leadership.Leadership(
            self.lease,
            role=self.name,
            source=self.source,
            elected=self._elected,
            deposed=self._deposed,
            renew_s=renew_s,
            standby=leases.Standby(self.bus, self.name, holder=holder, source=self.source, interval_s=renew_s),
        )
        # a lone dispatcher is active when start returns, its consumers bound (as before leadership)
        await self.leadership.start()
        self.spawn("leadership", self.leadership.run(self.stop_event))
        # last: registered as a reload member once it is ready (a reload announced meanwhile is caught up);
        # standbys take part too, so the one that takes over holds the current config
        self.participant = reloads.Participant(
            self.bus, role=self.name, source=self.source, current=lambda: self.config, apply=self._apply_config
        )
        await self.participant.start()
        self.spawn("reloads", self.participant.run(self.stop_event))
        log.info(
            "dispatcher_started",
            plugins=sorted(self.catalog.plugins),
            active=self.leadership.active,
            lease_ttl_s=ttl_s,
        )

    # --- leadership -----------------------------------------------------------

    async def _elected(self, term: leadership.Term) -> None:
        """This dispatcher is the active one: bind the consumers, take over what the previous one left unacked,
        and decide. The in-memory state starts empty, as after a restart: breakers and pipeline trees are read
        from KV when first needed, each schedule's state from its last event (services/dispatcher/schedules.py)."""
        assert self.bus is not None
        self._breakers = {}
        self.runs = pipeline_runs.PipelineRuns(self.bus, self.config, source=self.source, decide_submit=self._submit)
        # outcomes first: no failure may slip by before we listen; NEW so a first start never
        # re-decides the outcomes of an old event log
        outcomes = await consumers.ensure_pull(
            self.bus,
            stream=subjects.EVENTS,
            durable=subjects.DISPATCHER_OUTCOMES,
            filter_subjects=OUTCOME_SUBJECTS,
            ack_wait_s=30,
            max_ack_pending=10_000,
            deliver_policy=api.DeliverPolicy.NEW,
        )
        delays = await consumers.ensure_pull(
            self.bus,
            stream=subjects.WORK,
            durable=subjects.DISPATCHER_DELAYS,
            filter_subjects=[subjects.ALL_DELAYED],
            ack_wait_s=30,
            max_ack_pending=100_000,
        )
        commands = await consumers.ensure_pull(
            self.bus,
            stream=subjects.COMMANDS,
            durable=subjects.DISPATCHER_COMMANDS,
            filter_subjects=[subjects.ALL_COMMANDS],
            ack_wait_s=30,
            max_ack_pending=10_000,
        )
        events_in = ingest.IngestConsumer(self.bus, lambda: self.runs, source=self.source, fence=self._fence)
        incoming = await events_in.subscribe()
        # what a dead predecessor had fetched and not acked comes again now, not after its ack_wait
        for stream, durable in DURABLES:
            await consumers.redeliver_unacked(self.bus, stream=stream, durable=durable)
        fenced = self._fenced
        term.spawn(
            "outcomes",
            consumers.fetch_loop(
                outcomes, fenced(self._on_outcomes), term.ended, batch=256, name="outcomes", wait_s=0.5
            ),
        )
        term.spawn(
            "delays",
            consumers.fetch_loop(delays, fenced(self._on_delayed), term.ended, batch=256, name="delays", wait_s=0.5),
        )
        term.spawn(
            "commands",
            consumers.fetch_loop(
                commands, fenced(self._on_commands), term.ended, batch=256, name="commands", wait_s=0.5
            ),
        )
        term.spawn(
            "ingest",
            consumers.fetch_loop(
                incoming, fenced(events_in.on_batch), term.ended, batch=256, name="ingest", wait_s=0.5
            ),
        )
        self.scheduler = schedules.Scheduler(
            self.bus,
            lambda: self.config,
            submit=self._submit,
            job_state=self._job_state,
            source=self.source,
            clock=self.clock,
            interval_s=self.schedule_interval_s,
            fence=self._fence,
        )
        term.spawn("schedules", self.scheduler.run(term.ended))
        log.info("dispatcher_active", lease_valid_s=round(self.lease.remaining_s(), 3) if self.lease else None)

    async def _deposed(self) -> None:
        """No longer the active one: forget what was decided here (a later term reads it again)."""
        self._breakers = {}
        self.runs = None
        self.scheduler = None
        log.info("dispatcher_standing_by")

    def _fence(self) -> None:
        """Raise leadership.Deposed unless this dispatcher still holds a valid lease (called before each store)."""
        if self.leadership is None:
            raise leadership.Deposed("not started")
        self.leadership.fence()

    def _fenced(self, handler: consumers.BatchHandler) -> consumers.BatchHandler:
        """`handler`, refusing a batch once the lease is no longer valid (the batch goes back, unacked)."""

        async def fenced(msgs: list[Msg]) -> None:
            try:
                self._fence()
                await handler(msgs)
            except leadership.Deposed:
                log.warning("batch_fenced", size=len(msgs))
                for msg in msgs:  # handed back for the next active (whatever is not reached: after ack_wait)
                    with contextlib.suppress(Exception):
                        await msg.nak()

        return fenced

    async def _apply_config(self, fresh: config_mod.Config) -> None:
        """A reloaded config: plugins, retry and breaker policies, pipelines."""
        assert self.bus is not None
        self.config = fresh
        self.catalog = config_mod.plugin_catalog(fresh)
        if self.runs is not None:  # a standby builds its runs when it takes over
            self.runs = pipeline_runs.PipelineRuns(self.bus, fresh, source=self.source, decide_submit=self._submit)

    async def close(self) -> None:
        if self._own_bus and self.bus is not None:
            await self.bus.close()

    # --- commands -------------------------------------------------------------

    async def _on_commands(self, msgs: list[Msg]) -> None:
        """One batch: each job's commands in order, different jobs concurrently (their decisions read and write
        only their own keys and events), everything published at once, then the batch acked."""
        assert self.bus is not None
        groups: dict[str, list[envelope.Envelope]] = {}
        for msg in msgs:
            try:
                cmd = envelope.decode(msg.data)
            except envelope.DecodeError as exc:
                log.error("command_undecodable", subject=msg.subject, error=str(exc))
                continue
            groups.setdefault(cmd.job_id or msg.subject, []).append(cmd)
        decided = await asyncio.gather(*(self._decide_commands(group) for group in groups.values()))
        out = [item for published, _ in decided for item in published]
        if out:
            await publishing.publish_decisions(self.bus, out, fence=self._fence)
        # signals only after `cancel_requested` is stored: a runner that misses the signal (its preflight had
        # not begun) reads the request in preflight instead (services/runner/service.py `_execute`)
        for _, signals in decided:
            for signal in signals:
                await self.bus.nc.publish(signal, b"")
        for msg in msgs:
            await msg.ack()

    async def _decide_commands(self, cmds: list[envelope.Envelope]) -> tuple[decisions.Published, list[str]]:
        out: decisions.Published = []
        signals: list[str] = []
        for cmd in cmds:
            with _job_logged(cmd):
                if cmd.type == "job.submit":
                    out.extend(await self._submit(cmd))
                elif cmd.type == "pipeline.run":
                    out.extend(await self._run_pipeline(cmd))
                elif cmd.type == "job.cancel":
                    # the job as the log has it, and as this batch's earlier decisions (not stored yet) left it:
                    # a cancel right behind its submit would otherwise find no job and be dropped
                    job = await self._job_state(cmd.job_id, pending=out)
                    out.extend(cancels.decide_cancel(cmd, job, source=self.source))
                    if cmd.job_id:
                        signals.append(subjects.cancel_signal(cmd.job_id))
                else:
                    log.warning("command_unknown", type=cmd.type, subject=cmd.id)
        return out, signals

    async def _run_pipeline(self, cmd: envelope.Envelope) -> decisions.Published:
        assert self.runs is not None and cmd.job_id is not None
        name = str(cmd.data.get("pipeline"))
        pipeline = self.runs.compiled.get(name)
        authority = scopes.Authority.from_data(cmd.data.get("authority"))
        reason = f"unknown pipeline {name!r}" if pipeline is None else None
        if reason is None and authority is not None and not authority.allows(scopes.PIPELINE):
            reason = f"forbidden: {authority.who()} lacks {scopes.PIPELINE}, which pipeline {name!r} needs"
        if pipeline is None or reason is not None:
            env = envelope.make(
                "job.rejected",
                source=self.source,
                job_id=cmd.job_id,
                id=f"{cmd.job_id}:rejected",
                causation_id=cmd.id,
                correlation_id=cmd.job_id,
                data={"reason": reason, "command": {"plugin": "pipeline", "command": name, **cmd.data}},
            )
            return [(subjects.job_event(cmd.job_id, "rejected"), env)]
        event = {"type": cmd.data.get("trigger") or "api.trigger", "payload": cmd.data.get("payload") or {}}
        return await self.runs.start(
            pipeline,
            cmd.job_id,
            event=event,
            submitted_by=str(cmd.data.get("submitted_by") or "api"),
            parent_job_id=None,
            correlation_id=cmd.job_id,
            depth=0,
        )

    async def _submit(self, cmd: envelope.Envelope) -> decisions.Published:
        data = cmd.data
        if decisions.rejection_reason(data, self.catalog, self.config) is None:
            dedupe_key = data.get("dedupe_key")
            if dedupe_key:
                original = await self._claim_dedupe(str(dedupe_key), data["plugin"], data["command"], cmd.job_id or "")
                if original is not None:
                    return decisions.skipped(
                        cmd,
                        reason=f"duplicate of job {original} (dedupe_key {dedupe_key!r})",
                        source=self.source,
                        duplicate_of=original,
                        dedupe_key=dedupe_key,
                    )
            admitted, why = await self._admit(data["plugin"], data["command"])
            if not admitted:
                return decisions.skipped(cmd, reason=why, source=self.source)
        return decisions.decide_submit(cmd, self.catalog, self.config, source=self.source)

    async def _claim_dedupe(self, dedupe_key: str, plugin: str, command: str, job_id: str) -> str | None:
        """None when this job owns the key (first, or a redelivery of the first); else the owner's job id."""
        assert self.bus is not None
        kv = await self.bus.kv(subjects.KV_DEDUPE)
        digest = hashlib.sha256(f"{dedupe_key}\x00{plugin}\x00{command}".encode()).hexdigest()
        key = f"dk.{digest}"
        try:
            await kv.create(key, job_id.encode())
            return None
        except nats.js.errors.KeyWrongLastSequenceError:
            entry = await kv.get(key)
            owner = (entry.value or b"").decode()
            return None if owner == job_id else owner

    # --- breakers -------------------------------------------------------------

    async def _breaker(self, plugin: str, command: str) -> tuple[Any, breaker.BreakerState]:
        """The breaker state: read from KV once, then kept here (this dispatcher writes every change)."""
        assert self.bus is not None
        kv = await self.bus.kv(subjects.KV_BREAKERS)
        key = breaker.key(plugin, command)
        if key not in self._breakers:
            try:
                entry = await kv.get(key)
                self._breakers[key] = breaker.BreakerState.from_dict(orjson.loads(entry.value or b"{}"))
            except nats.js.errors.KeyNotFoundError:
                self._breakers[key] = breaker.BreakerState()
        return kv, self._breakers[key]

    async def _save_breaker(self, kv: Any, plugin: str, command: str, state: breaker.BreakerState) -> None:
        self._fence()
        key = breaker.key(plugin, command)
        self._breakers[key] = state
        await kv.put(key, orjson.dumps(state.to_dict()))

    async def _admit(self, plugin: str, command: str) -> tuple[bool, str]:
        kv, state = await self._breaker(plugin, command)
        if state.state == "closed":
            return True, ""
        policy = self.config.plugin(plugin).circuit_breaker
        admitted, new = breaker.admit(state, reset_after_s=policy.reset_after_s)
        if new != state:
            await self._save_breaker(kv, plugin, command, new)
        if admitted:
            return True, ""
        return False, f"circuit open for {plugin}.{command} after {state.failures} consecutive failures"

    async def _record_outcome(self, env: envelope.Envelope) -> None:
        plugin, command = env.data.get("plugin"), env.data.get("command")
        succeeded = breaker.verdict(env.type, env.data)
        if not isinstance(plugin, str) or not isinstance(command, str) or succeeded is None:
            return  # a lost attempt (its runner died) is no failure of the plugin's
        kv, state = await self._breaker(plugin, command)
        policy = self.config.plugin(plugin).circuit_breaker
        new = breaker.record(state, succeeded=succeeded, threshold=policy.threshold)
        if new != state:
            await self._save_breaker(kv, plugin, command, new)
            if new.state == "open" and state.state != "open":
                log.warning("circuit_opened", plugin=plugin, command=command, failures=new.failures)

    # --- outcomes and delays --------------------------------------------------

    async def _job_state(
        self, job_id: str | None, *, pending: decisions.Published | None = None
    ) -> dict[str, Any] | None:
        """The job folded from its events in the log (the dispatcher reads no database), then from `pending`:
        events decided in this batch and not stored yet."""
        assert self.bus is not None
        if not job_id:
            return None
        history = await self.bus.history(subjects.EVENTS, subjects.job_events(job_id))
        last = history[-1][0] if history else 0
        mine = [
            env
            for subject, env in pending or []
            if env.job_id == job_id and subjects.stream_of(subject) == subjects.EVENTS
        ]
        return jobstate.fold([*history, *((last + i, env) for i, env in enumerate(mine, start=1))])

    async def _on_outcomes(self, msgs: list[Msg]) -> None:
        """One batch: breakers in order, then each job's decision; jobs of different pipeline runs are decided
        concurrently (a run's tree is one KV record, so one run's outcomes go in order), everything they caused
        is published at once, then the batch is acked (publish, then ack)."""
        assert self.bus is not None
        groups: dict[str, list[envelope.Envelope]] = {}
        for msg in msgs:
            try:
                env = envelope.decode(msg.data)
            except envelope.DecodeError as exc:
                log.error("event_undecodable", subject=msg.subject, error=str(exc))
                continue
            if env.data.get("pipeline_root") or not env.job_id:
                continue  # a pipeline's root job: decided here already
            if env.type in ("job.succeeded", "job.failed", "job.timed_out"):
                with _job_logged(env):
                    await self._record_outcome(env)
            if env.type in ("job.failed", "job.timed_out") or (
                env.type in ROUTED_FINALS and self.runs is not None and self.runs.compiled.pipelines
            ):
                route = env.data.get("route")
                key = str(route.get("root") or env.job_id) if isinstance(route, dict) else env.job_id
                groups.setdefault(key, []).append(env)
        if groups:
            decided = await asyncio.gather(*(self._decide_outcomes(group) for group in groups.values()))
            out = [item for published in decided for item in published]
            if out:
                await publishing.publish_decisions(self.bus, out, fence=self._fence)
                metrics.fates_stored(out)
        for msg in msgs:
            await msg.ack()

    async def _decide_outcomes(self, envs: list[envelope.Envelope]) -> decisions.Published:
        out: decisions.Published = []
        for env in envs:
            with _job_logged(env):
                if env.type in ("job.failed", "job.timed_out"):
                    out.extend(await self._after_failure(env))
                elif self.runs is not None:
                    out.extend(await self.runs.after_job(env, await self._job_spec(env)))
        return out

    async def _job_spec(self, env: envelope.Envelope) -> dict[str, Any] | None:
        """What the job was submitted with (its queued event; a job that never queued carries it itself)."""
        assert self.bus is not None and env.job_id is not None
        if env.type == "job.rejected":
            return env.data.get("command")
        if env.type == "job.skipped" or "route" in env.data:  # outcomes of attempts carry their routing
            return env.data
        queued = await self.bus.last_message(subjects.EVENTS, subjects.job_event(env.job_id, "queued"))
        return queued[1].data if queued else None

    async def _after_failure(self, env: envelope.Envelope) -> decisions.Published:
        assert self.bus is not None and env.job_id is not None
        # three reads at once (each is a round trip)
        job, cancel_requested, queued = await asyncio.gather(
            self._job_state(env.job_id),
            self.bus.last_message(subjects.EVENTS, subjects.job_event(env.job_id, "cancel_requested")),
            self.bus.last_message(subjects.EVENTS, subjects.job_event(env.job_id, "queued")),
        )
        attempt = int(env.data.get("attempt", 1))
        if job is not None and (job["status"] in ("dead", "cancelled", "succeeded") or job["attempt"] > attempt):
            return []  # already decided (a redelivered outcome), or overtaken
        if cancel_requested:
            return []
        out = retries.decide_outcome(env, queued[1] if queued else None, self.config, source=self.source)
        log.info(
            "attempt_failed",
            job_id=env.job_id,
            plugin=env.data.get("plugin"),
            attempt=attempt,
            decision=out[0][1].type if out else None,
        )
        return out

    async def _on_delayed(self, msgs: list[Msg]) -> None:
        assert self.bus is not None
        now = envelope.now()
        for msg in msgs:
            try:
                parked = envelope.decode(msg.data)
                due = envelope.parse_time(parked.data["not_before"])
            except (envelope.DecodeError, KeyError, ValueError) as exc:
                log.error("delayed_item_invalid", subject=msg.subject, error=str(exc))
                await msg.term()
                continue
            wait_s = (due - now).total_seconds()
            if wait_s > 0:
                await msg.nak(delay=wait_s)
                continue
            with _job_logged(parked):
                cancelled = parked.job_id and await self.bus.last_message(
                    subjects.EVENTS, subjects.job_event(parked.job_id, "cancel_requested")
                )
                if not cancelled:
                    self._fence()
                    await self.bus.publish(*retries.release(parked))
            await msg.ack()

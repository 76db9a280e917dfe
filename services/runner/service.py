"""Runner service: work.<plugin>.> → one attempt → evt.job.* (+ plugin.emitted, plugin.state_updated).

One durable pull consumer per plugin is that plugin's mailbox, shared by every runner
process; its max_ack_pending is the plugin's parallelism, so the cap holds across runners.
A work item is acked only after the events of its outcome are stored.
A plugin's request carries its `secrets:` and, with a vault, the secrets granted to its vault
principal (services/core/vault.py `plugin_secrets`, re-read from the file when it changed).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import Any

import nats.errors
import orjson
from nats.aio.msg import Msg
from nats.js import api

from services.core import agents as agents_mod
from services.core import bus as bus_mod
from services.core import catalog as catalog_mod
from services.core import config as config_mod
from services.core import consumers, envelope, errors, lifecycle, logging, metrics, offload, reloads, subjects
from services.core import vault as vault_mod
from services.runner import (
    attempt,
    builtin,
    heartbeat,
    inprocess,
    plugin_state,
    preflight,
    privileges,
    protocol,
    supervision,
)

log = logging.get("runner")

#: how long a stopping runner's mailboxes wait for their running attempts (compose's stop_grace_period and
#: the Kubernetes terminationGracePeriodSeconds of the runner are longer, tests/unit/test_compose.py, test_k8s.py)
STOP_WAIT_S = 30.0
#: agent runs and prompts mostly wait on child jobs, which a stopping runner may be the one to run: they
#: get this long, then they are cancelled unacknowledged, and another runner takes them over (as after a crash)
BUILTIN_STOP_WAIT_S = 2.0


async def _no_state() -> dict[str, Any]:
    return {}


def parallelism_of(plugin: config_mod.PluginConfig, manifest: catalog_mod.Manifest, max_workers: int) -> int:
    if not manifest.concurrency_safe:
        return 1
    if plugin.parallelism is not None:
        return plugin.parallelism
    return max_workers


class Runner(lifecycle.Service):
    name = "runner"
    # its mailboxes wait STOP_WAIT_S for running attempts: the service's stop must not cut that short
    stop_timeout_s = STOP_WAIT_S + 5.0

    def __init__(
        self,
        config: config_mod.Config,
        *,
        bus: bus_mod.Bus | None = None,
        plugins: list[str] | None = None,
        ack_wait_s: float | None = None,
        heartbeat_s: float | None = None,
    ) -> None:
        super().__init__()
        self.ack_wait_s = ack_wait_s or config.work_lease_s
        #: in-progress acks while a plugin runs; None = a third of the ack wait
        self.heartbeat_s = heartbeat_s
        self.config = config
        self.bus = bus
        self._own_bus = bus is None
        self.only_plugins = set(plugins) if plugins else None
        self.source = config_mod.instance_name("runner")
        self.catalog = config_mod.plugin_catalog(config)
        self.slots = asyncio.Semaphore(config.max_workers)
        self.running: dict[str, asyncio.Event] = {}
        self._mailboxes: set[str] = set()
        #: job id → the deliveries of the attempt this runner is executing (acked together with its outcome)
        self._held: dict[str, list[Msg]] = {}
        #: agent runs and prompts (services/runner/builtin.py); set up in start
        self.builtin: builtin.Runtime | None = None
        #: the agents this runner has a mailbox for (heartbeat.Presence writes `agent.<name>` for each)
        self.agents_served: list[str] = []
        #: who subprocess plugins run as (None: as this process), services/runner/privileges.py
        self.plugin_user = privileges.resolve(config.plugin_user)
        self.participant: reloads.Participant | None = None

    async def start(self) -> None:
        self.bus = await bus_mod.open_for(self.config, name=self.source, bus=self.bus)
        await self._open_mailboxes()
        await self._open_builtin_mailboxes()
        await self.bus.nc.subscribe(subjects.ALL_CANCEL_SIGNALS, cb=self._on_cancel_signal)
        self.spawn("presence", heartbeat.Presence(self, interval_s=self.config.heartbeat_interval_s).run())
        self.participant = reloads.Participant(
            self.bus, role=self.name, source=self.source, current=lambda: self.config, apply=self._apply_config
        )
        await self.participant.start()
        self.spawn("reloads", self.participant.run(self.stop_event))
        log.info(
            "runner_started",
            plugins=sorted(self.catalog.plugins),
            source=self.source,
            plugin_user=self.plugin_user.name if self.plugin_user else None,
        )
        if self.plugin_user is not None and any(m.is_python for m in self.catalog.plugins.values()):
            log.warning(
                "in_process_plugins_run_as_root",
                reason="protocol: python plugins share the runner's "
                "process and user; only subprocess plugins run as service.plugin_user",
            )

    async def _open_mailboxes(self) -> None:
        """One mailbox per enabled plugin that has none yet."""
        assert self.bus is not None
        for name, manifest in sorted(self.catalog.plugins.items()):
            plugin = self.config.plugin(name)
            if name in self._mailboxes or not plugin.enabled or (self.only_plugins and name not in self.only_plugins):
                continue
            if name in agents_mod.RESERVED:
                log.warning("plugin_name_reserved", plugin=name, path=str(manifest.directory))
                continue
            limit = parallelism_of(plugin, manifest, self.config.max_workers)
            sub = await consumers.ensure_pull(
                self.bus,
                stream=subjects.WORK,
                durable=subjects.runner_consumer(name),
                filter_subjects=[subjects.plugin_work(name)],
                ack_wait_s=self.ack_wait_s,
                max_ack_pending=limit,
            )
            self._mailboxes.add(name)
            self.spawn(f"plugin:{name}", self._mailbox(name, sub, asyncio.Semaphore(limit), limit))

    async def _apply_config(self, fresh: config_mod.Config) -> None:
        """A reloaded config: plugin config, secrets and timeouts now; newly enabled plugins get a mailbox."""
        try:
            self.plugin_user = privileges.resolve(fresh.plugin_user)
        except errors.ConfigError as exc:
            log.error("plugin_user_unchanged", error=exc.message)  # keep dropping to the previous user
        self.config = fresh
        self.catalog = config_mod.plugin_catalog(fresh)
        await self._open_mailboxes()
        await self._open_builtin_mailboxes()

    async def _open_builtin_mailboxes(self) -> None:
        """Agent runs (one mailbox per agent: work.agent.<name>) and prompts (work.prompt.>)."""
        assert self.bus is not None
        self.builtin = builtin.Runtime(bus=self.bus, config=self.config, catalog=self.catalog, source=self.source)
        for agent, found in self.builtin.problems().items():
            log.error("agent_misconfigured", agent=agent, problems=found)
        serves = not self.only_plugins or not self.only_plugins.isdisjoint(agents_mod.RESERVED)
        if not serves:
            return
        boxes = [
            (
                f"agent:{name}",
                subjects.agent_consumer(name),
                subjects.work(agents_mod.AGENT, name),
                spec.parallelism or self.config.max_workers,
            )
            for name, spec in self.builtin.agents.items()
        ]
        boxes.append(
            (
                agents_mod.PROMPT,
                subjects.runner_consumer(agents_mod.PROMPT),
                subjects.plugin_work(agents_mod.PROMPT),
                self.config.max_workers,
            )
        )
        for key, durable, subject, limit in boxes:
            if key in self._mailboxes:
                continue
            sub = await consumers.ensure_pull(
                self.bus,
                stream=subjects.WORK,
                durable=durable,
                filter_subjects=[subject],
                ack_wait_s=self.ack_wait_s,
                max_ack_pending=limit,
            )
            self._mailboxes.add(key)
            # agent runs and prompts mostly wait on child jobs: they must not hold the shared slots
            self.spawn(
                key,
                self._mailbox(
                    key, sub, asyncio.Semaphore(limit), limit, shared_slots=False, stop_wait_s=BUILTIN_STOP_WAIT_S
                ),
            )
        self.agents_served = sorted(self.builtin.agents)

    async def _on_cancel_signal(self, msg: Msg) -> None:
        """ctl.cancel.<job_id>: stop the plugin if this runner holds the job (like a deadline)."""
        cancel = self.running.get(msg.subject.rpartition(".")[2])
        if cancel is not None:
            cancel.set()

    async def close(self) -> None:
        if self._own_bus and self.bus is not None:
            await self.bus.close()

    async def _mailbox(
        self,
        plugin: str,
        sub: Any,
        local: asyncio.Semaphore,
        limit: int,
        *,
        shared_slots: bool = True,
        stop_wait_s: float = STOP_WAIT_S,
    ) -> None:
        """Fetch only as many work items as there are free slots, so none waits here unleased."""
        inflight: set[asyncio.Task[None]] = set()
        while not self.stop_event.is_set():
            await local.acquire()
            reserved = 1
            while reserved < limit and not local.locked():
                await local.acquire()
                reserved += 1
            try:
                msgs = await consumers.fetch_ready(sub, reserved, timeout=0.5, stop=self.stop_event)
            except (TimeoutError, nats.errors.TimeoutError):
                msgs = []
            except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError):
                msgs = []
                self.stop_event.set()
            except nats.errors.Error as exc:
                log.warning("fetch_failed", plugin=plugin, error=str(exc) or type(exc).__name__)
                msgs = []
                await asyncio.sleep(0.5)
            for msg in msgs:
                task = asyncio.create_task(self._run_one(msg, local, shared_slots=shared_slots))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
            for _ in range(reserved - len(msgs)):
                local.release()
        # let running attempts finish (their plugin deadline bounds this) before the bus closes
        # those still running then are cancelled unacknowledged: redelivered to another runner, as after a crash
        await lifecycle.finish_or_cancel(inflight, stop_wait_s)

    async def _run_one(self, msg: Msg, local: asyncio.Semaphore, *, shared_slots: bool = True) -> None:
        try:
            async with self.slots if shared_slots else contextlib.nullcontext():
                await self._execute(msg)
        except Exception:
            log.exception("attempt_crashed")
            with contextlib.suppress(Exception):
                await msg.nak(delay=1)
        finally:
            local.release()

    async def _execute(self, msg: Msg) -> None:
        assert self.bus is not None
        try:
            env = envelope.decode(msg.data)
            item = attempt.WorkItem.from_envelope(env)
        except (envelope.DecodeError, KeyError, TypeError, ValueError, AssertionError) as exc:
            log.error("work_item_invalid", error=str(exc), subject=msg.subject)
            await msg.term()
            return
        # this task handles this one message (`_mailbox` starts one per message, in a copy of the context), so
        # the job's ids stay bound to its end: every line about the attempt, `attempt_crashed` included
        logging.bind_job(item.job_id, correlation_id=item.correlation_id, plugin=item.plugin, command=item.command)
        if item.job_id in self._held:
            # redelivered to this very runner while it still runs the attempt (a late heartbeat):
            # keep this delivery leased too and ack it with the outcome
            self._held[item.job_id].append(msg)
            return
        # listen for the cancel signal before preflight reads the log: the dispatcher stores
        # `cancel_requested` before it signals, so a cancel is either in what preflight reads or signalled here
        cancel = self.running.setdefault(item.job_id, asyncio.Event())
        try:
            await self._attempt(msg, item, cancel)
        finally:
            if self.running.get(item.job_id) is cancel:
                del self.running[item.job_id]

    async def _attempt(self, msg: Msg, item: attempt.WorkItem, cancel: asyncio.Event) -> None:
        assert self.bus is not None
        bound = log.bind(job_id=item.job_id, plugin=item.plugin, command=item.command, attempt=item.attempt)
        manifest = self.catalog.get(item.plugin)
        work_seq = msg.metadata.sequence.stream if msg.metadata.sequence is not None else None
        num_delivered = msg.metadata.num_delivered or 1
        # the plugin's state is read while the attempt is claimed (round trips are the cost here)
        state_read = asyncio.ensure_future(self._load_state(item.plugin) if manifest is not None else _no_state())
        # `started` is stored before the plugin runs: it claims the attempt. Were it stored while the plugin
        # ran, a bus outage in between would leave a run the log never saw, and its redelivery would run the
        # plugin again. A duplicate ack means another copy of this work item already claimed the attempt.
        started = attempt.started_event(item, source=self.source, work_seq=work_seq)
        claim = await self._claim_unread(item, started, num_delivered=num_delivered)
        if claim is None:
            run, recorded = await preflight.check(
                self.bus, item, num_delivered=num_delivered, work_seq=work_seq, source=self.source
            )
            if not run:
                state_read.cancel()
                if recorded:
                    await self.bus.publish_all(recorded)
                await msg.ack_sync()
                bound.info("attempt_not_run", recorded=[env.type for _, env in recorded])
                return
            claim = await self.bus.publish(*started)
        if claim.duplicate:
            state_read.cancel()
            await msg.ack_sync()
            bound.info("attempt_not_run", reason="another delivery already started this attempt")
            return
        state = await state_read
        plugin_config = self.config.plugin(item.plugin)
        held = self._held[item.job_id] = [msg]
        heartbeat = asyncio.create_task(self._heartbeat(held))
        try:
            if cancel.is_set():  # signalled between preflight and the claim: never start the plugin
                outcome = protocol.Outcome(status="cancelled", error="cancelled before it ran", retry=False)
            elif item.plugin in agents_mod.RESERVED and self.builtin is not None:
                outcome = await self.builtin.execute(item, cancel)
            elif manifest is None or item.command not in manifest.commands:
                outcome = protocol.Outcome(
                    status="failed",
                    retry=False,
                    error=f"plugin {item.plugin!r} has no command {item.command!r} on this runner",
                )
            else:
                try:
                    # the vault principal's granted secrets over the `secrets:` of the plugin's config (in a
                    # thread only with a vault: it may re-read and decrypt the file)
                    compose = functools.partial(
                        vault_mod.plugin_secrets,
                        self.config.vault,
                        item.plugin,
                        plugin_config.principal,
                        requires_vault=plugin_config.requires_vault,
                    )
                    delivered = await asyncio.to_thread(compose) if self.config.vault is not None else compose()
                except vault_mod.VaultError as exc:
                    outcome = protocol.Outcome(status="failed", retry=False, error=str(exc))
                else:
                    request = protocol.build_request(
                        job_id=item.job_id,
                        command=item.command,
                        config=dict(plugin_config.config),
                        secrets={**plugin_config.secrets, **delivered},
                        state=state,
                        payload=item.payload,
                        context=item.context,
                        event=item.event,
                        timeout_s=item.timeout_s,
                    )
                    outcome = await self._invoke(manifest, request, item.timeout_s, cancel)
        except BaseException:
            self._held.pop(item.job_id, None)
            raise
        finally:
            heartbeat.cancel()
        outcome = protocol.checked(outcome)
        new_state: dict[str, Any] | None = None
        facts: list[dict[str, Any]] = []
        updates = (outcome.response or {}).get("state_updates") if outcome.status == "succeeded" else None
        if updates:
            new_state, facts = plugin_state.apply(manifest, item.command, state, updates)
            if new_state is not None:
                await self._save_state(item.plugin, new_state)
        stored = await self._stored_result(item, outcome)
        try:
            await self.bus.publish_all(
                attempt.outcome_events(
                    item, outcome, source=self.source, state=new_state, stored_result=stored, facts=facts
                )
            )
            for delivery in held:
                # no need to wait for the ack's confirmation: the outcome is stored, and a lost ack only
                # means a redelivery that preflight recognises as done
                await delivery.ack()
        finally:
            self._held.pop(item.job_id, None)
        bound.info("attempt_finished", status=outcome.status, duration_ms=outcome.duration_ms, error=outcome.error)
        metrics.attempt_finished(item.plugin, item.command, outcome.status, outcome.duration_ms)

    async def _claim_unread(
        self, item: attempt.WorkItem, started: tuple[str, envelope.Envelope], *, num_delivered: int
    ) -> api.PubAck | None:
        """The first delivery of a first attempt claims it without reading the log: `started` is stored only
        while the job's `queued` (its sequence is `claim_after`) is still the last of the job's events, which
        proves what preflight would read — no cancel requested, no other delivery started. None: not such a
        delivery, or something was recorded since; preflight reads and decides then."""
        assert self.bus is not None
        if item.claim_after is None or item.attempt != 1 or num_delivered > 1:
            return None
        try:
            return await self.bus.publish(
                *started, expected_last_subject_seq=item.claim_after, expected_filter=subjects.job_events(item.job_id)
            )
        except errors.Conflict:
            return None

    async def _stored_result(self, item: attempt.WorkItem, outcome: protocol.Outcome) -> Any:
        """The result as the outcome event carries it: itself, or a pointer when it is over the offload threshold."""
        if outcome.response is None or outcome.status not in ("succeeded", "failed"):
            return None
        assert self.bus is not None
        key = offload.key_for(item.job_id, attempt=None if outcome.status == "succeeded" else item.attempt)
        return await offload.maybe_offload(
            self.bus,
            outcome.response,
            threshold_bytes=self.config.offload_threshold_bytes,
            bucket=self.config.offload_bucket,
            key=key,
        )

    async def _invoke(
        self, manifest: catalog_mod.Manifest, request: dict[str, Any], timeout_s: float, cancel: asyncio.Event
    ) -> protocol.Outcome:
        if manifest.is_python:
            return await inprocess.run(manifest, request, timeout_s=timeout_s, cancel=cancel)
        executable, env, user = manifest.directory / manifest.entrypoint, config_mod.plugin_base_env(), self.plugin_user
        if user is not None:
            denied = privileges.cannot_run(user, executable)
            if denied:
                return protocol.Outcome(status="failed", error=denied, retry=False)
            env = user.env(env)
        raw = await supervision.run(
            executable,
            orjson.dumps(request),
            timeout_s=timeout_s,
            env=env,
            cwd=manifest.directory,
            cancel=cancel,
            run_as=(user.uid, user.gid) if user is not None else None,
        )
        return protocol.interpret_run(raw, timeout_s=timeout_s)

    async def _heartbeat(self, deliveries: list[Msg]) -> None:
        """Keep the lease while the plugin runs: a 10-minute plugin is not redelivered."""
        interval = self.heartbeat_s or self.ack_wait_s / 3
        while True:
            await asyncio.sleep(interval)
            for delivery in list(deliveries):
                with contextlib.suppress(Exception):
                    await delivery.in_progress()

    async def _load_state(self, plugin: str) -> dict[str, Any]:
        assert self.bus is not None
        kv = await self.bus.kv(subjects.KV_PLUGIN_STATE)
        try:
            entry = await kv.get(plugin)
        except Exception:
            return {}
        return orjson.loads(entry.value) if entry.value else {}

    async def _save_state(self, plugin: str, state: dict[str, Any]) -> None:
        assert self.bus is not None
        kv = await self.bus.kv(subjects.KV_PLUGIN_STATE)
        await kv.put(plugin, orjson.dumps(state))

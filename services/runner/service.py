"""Runner service: work.<plugin>.> → one attempt → evt.job.* (+ plugin.emitted, plugin.state_updated).

One durable pull consumer per plugin is that plugin's mailbox, shared by every runner
process; its max_ack_pending is the plugin's parallelism, so the cap holds across runners.
A work item is acked only after the events of its outcome are stored.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import nats.errors
import orjson
from nats.aio.msg import Msg

from services.core import bus as bus_mod
from services.core import catalog as catalog_mod
from services.core import config as config_mod
from services.core import consumers, envelope, lifecycle, logging, subjects
from services.runner import attempt, heartbeat, inprocess, preflight, protocol, supervision

log = logging.get("runner")

#: how long a delivered work item stays leased without an ack or an in-progress heartbeat
ACK_WAIT_S = 30.0
HEARTBEAT_S = ACK_WAIT_S / 3


def parallelism_of(plugin: config_mod.PluginConfig, manifest: catalog_mod.Manifest, max_workers: int) -> int:
    if not manifest.concurrency_safe:
        return 1
    if plugin.parallelism is not None:
        return plugin.parallelism
    return max_workers


class Runner(lifecycle.Service):
    name = "runner"

    def __init__(self, config: config_mod.Config, *, bus: bus_mod.Bus | None = None,
                 plugins: list[str] | None = None, ack_wait_s: float | None = None,
                 heartbeat_s: float | None = None) -> None:
        super().__init__()
        self.ack_wait_s = ack_wait_s or config.work_lease_s
        #: in-progress acks while a plugin runs; None = a third of the ack wait
        self.heartbeat_s = heartbeat_s
        self.config = config
        self.bus = bus
        self._own_bus = bus is None
        self.only_plugins = set(plugins) if plugins else None
        self.source = config_mod.instance_name("runner")
        self.catalog = catalog_mod.scan(config.plugin_roots)
        self.slots = asyncio.Semaphore(config.max_workers)
        self.running: dict[str, asyncio.Event] = {}

    async def start(self) -> None:
        if self.bus is None:
            assert self.config.nats_url, "NATS_URL is not set"
            self.bus = await bus_mod.Bus.connect(self.config.nats_url, name=self.source,
                                                 replicas=self.config.nats_replicas)
        await self.bus.ensure_topology(dedupe_ttl_s=self.config.dedupe_ttl_s)
        for name, manifest in sorted(self.catalog.plugins.items()):
            plugin = self.config.plugin(name)
            if not plugin.enabled or (self.only_plugins and name not in self.only_plugins):
                continue
            limit = parallelism_of(plugin, manifest, self.config.max_workers)
            sub = await consumers.ensure_pull(
                self.bus, stream=subjects.WORK, durable=subjects.runner_consumer(name),
                filter_subjects=[subjects.plugin_work(name)], ack_wait_s=self.ack_wait_s, max_ack_pending=limit,
            )
            local = asyncio.Semaphore(limit)
            self.spawn(f"plugin:{name}", self._mailbox(name, sub, local, limit))
        await self.bus.nc.subscribe(subjects.ALL_CANCEL_SIGNALS, cb=self._on_cancel_signal)
        self.spawn("presence", heartbeat.Presence(self).run())
        log.info("runner_started", plugins=sorted(self.catalog.plugins), source=self.source)

    async def _on_cancel_signal(self, msg: Msg) -> None:
        """ctl.cancel.<job_id>: stop the plugin if this runner holds the job (like a deadline)."""
        cancel = self.running.get(msg.subject.rpartition(".")[2])
        if cancel is not None:
            cancel.set()

    async def close(self) -> None:
        if self._own_bus and self.bus is not None:
            await self.bus.close()

    async def _mailbox(self, plugin: str, sub: Any, local: asyncio.Semaphore, limit: int) -> None:
        """Fetch only as many work items as there are free slots, so none waits here unleased."""
        inflight: set[asyncio.Task[None]] = set()
        while not self.stop_event.is_set():
            await local.acquire()
            reserved = 1
            while reserved < limit and not local.locked():
                await local.acquire()
                reserved += 1
            try:
                msgs = await sub.fetch(reserved, timeout=0.5)
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
                task = asyncio.create_task(self._run_one(msg, local))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
            for _ in range(reserved - len(msgs)):
                local.release()
        # let running attempts finish (their plugin deadline bounds this) before the bus closes
        if inflight:
            await asyncio.wait(inflight, timeout=30)

    async def _run_one(self, msg: Msg, local: asyncio.Semaphore) -> None:
        try:
            async with self.slots:
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
        bound = log.bind(job_id=item.job_id, plugin=item.plugin, command=item.command, attempt=item.attempt)
        run, recorded = await preflight.check(self.bus, item, num_delivered=msg.metadata.num_delivered or 1,
                                              source=self.source)
        if not run:
            if recorded:
                await self.bus.publish_all(recorded)
            await msg.ack_sync()
            bound.info("attempt_not_run", recorded=[env.type for _, env in recorded])
            return
        manifest = self.catalog.get(item.plugin)
        plugin_config = self.config.plugin(item.plugin)
        await self.bus.publish(*attempt.started_event(item, source=self.source))
        heartbeat = asyncio.create_task(self._heartbeat(msg))
        cancel = asyncio.Event()
        self.running[item.job_id] = cancel
        try:
            if manifest is None or item.command not in manifest.commands:
                outcome = protocol.Outcome(status="failed", retry=False,
                                           error=f"plugin {item.plugin!r} has no command {item.command!r} on this runner")
                state: dict[str, Any] = {}
            else:
                state = await self._load_state(item.plugin)
                request = protocol.build_request(
                    job_id=item.job_id, command=item.command, config=dict(plugin_config.config),
                    secrets=dict(plugin_config.secrets), state=state, payload=item.payload,
                    context=item.context, event=item.event, timeout_s=item.timeout_s,
                )
                outcome = await self._invoke(manifest, request, item.timeout_s, cancel)
        finally:
            heartbeat.cancel()
            self.running.pop(item.job_id, None)
        new_state = None
        if outcome.status == "succeeded" and (outcome.response or {}).get("state_updates"):
            new_state = {**state, **outcome.response["state_updates"]}  # type: ignore[index]
            await self._save_state(item.plugin, new_state)
        await self.bus.publish_all(attempt.outcome_events(item, outcome, source=self.source, state=new_state))
        await msg.ack_sync()
        bound.info("attempt_finished", status=outcome.status, duration_ms=outcome.duration_ms, error=outcome.error)

    async def _invoke(self, manifest: catalog_mod.Manifest, request: dict[str, Any], timeout_s: float,
                      cancel: asyncio.Event) -> protocol.Outcome:
        if manifest.is_python:
            return await inprocess.run(manifest, request, timeout_s=timeout_s, cancel=cancel)
        raw = await supervision.run(
            manifest.directory / manifest.entrypoint, orjson.dumps(request), timeout_s=timeout_s,
            env=config_mod.plugin_base_env(), cwd=manifest.directory, cancel=cancel,
        )
        return protocol.interpret_run(raw, timeout_s=timeout_s)

    async def _heartbeat(self, msg: Msg) -> None:
        """Keep the lease while the plugin runs: a 10-minute plugin is not redelivered."""
        interval = self.heartbeat_s or self.ack_wait_s / 3
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):
                await msg.in_progress()

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

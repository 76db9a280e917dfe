"""Dispatcher service: cmd.> → decisions → evt.* and work.*; acks a command only after
everything it caused is stored (publish, then ack), so a crash means redelivery, and the
deterministic event ids make the second publish a no-op.
"""

from __future__ import annotations

from nats.aio.msg import Msg

from services.core import bus as bus_mod
from services.core import catalog as catalog_mod
from services.core import config as config_mod
from services.core import consumers, envelope, lifecycle, logging, subjects
from services.dispatcher import decisions

log = logging.get("dispatcher")


class Dispatcher(lifecycle.Service):
    name = "dispatcher"

    def __init__(self, config: config_mod.Config, *, bus: bus_mod.Bus | None = None) -> None:
        super().__init__()
        self.config = config
        self.bus = bus
        self._own_bus = bus is None
        self.source = config_mod.instance_name("dispatcher")
        self.catalog = catalog_mod.scan(config.plugin_roots)

    async def start(self) -> None:
        if self.bus is None:
            assert self.config.nats_url, "NATS_URL is not set"
            self.bus = await bus_mod.Bus.connect(self.config.nats_url, name=self.source,
                                                 replicas=self.config.nats_replicas)
        await self.bus.ensure_topology(dedupe_ttl_s=self.config.dedupe_ttl_s)
        commands = await consumers.ensure_pull(
            self.bus, stream=subjects.COMMANDS, durable=subjects.DISPATCHER_COMMANDS,
            filter_subjects=[subjects.ALL_COMMANDS], ack_wait_s=30, max_ack_pending=10_000,
        )
        self.spawn("commands", consumers.fetch_loop(commands, self._on_commands, self.stop_event,
                                                    batch=256, name="commands", wait_s=0.5))
        log.info("dispatcher_started", plugins=sorted(self.catalog.plugins))

    async def close(self) -> None:
        if self._own_bus and self.bus is not None:
            await self.bus.close()

    async def _on_commands(self, msgs: list[Msg]) -> None:
        assert self.bus is not None
        out: decisions.Published = []
        for msg in msgs:
            try:
                cmd = envelope.decode(msg.data)
            except envelope.DecodeError as exc:
                log.error("command_undecodable", subject=msg.subject, error=str(exc))
                continue
            if cmd.type == "job.submit":
                out.extend(decisions.decide_submit(cmd, self.catalog, self.config, source=self.source))
            else:
                log.warning("command_unknown", type=cmd.type, subject=msg.subject)
        if out:
            await self.bus.publish_all(out)
        for msg in msgs:
            await msg.ack()

"""Config reloads across processes: `POST /system/reload` validates the file and publishes
`evt.system.config_reloaded`; every service listening here re-reads its own file and applies it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg

from services.core import bus as bus_mod
from services.core import config as config_mod
from services.core import envelope, errors, logging, subjects

log = logging.get("reloads")

EVENT_TYPE = "system.config_reloaded"


def reloaded_event(config: config_mod.Config, *, source: str) -> tuple[str, envelope.Envelope]:
    env = envelope.make(EVENT_TYPE, source=source,
                        data={"fingerprint": config_mod.fingerprint(config),
                              "path": str(config.path) if config.path else None})
    return subjects.system_event("config_reloaded"), env


async def listen(bus: bus_mod.Bus, current: Callable[[], config_mod.Config],
                 apply: Callable[[config_mod.Config], Awaitable[None]], *, service: str) -> None:
    """Re-read and apply the config whenever a reload is announced (unless it is already the one in use)."""

    async def on_reload(msg: Msg) -> None:
        try:
            announced = envelope.decode(msg.data).data.get("fingerprint")
            if announced and announced == config_mod.fingerprint(current()):
                return
            fresh = config_mod.reload(current())
        except (errors.ConfigError, envelope.DecodeError) as exc:
            log.error("config_reload_failed", service=service, error=str(exc))
            return
        await apply(fresh)
        log.info("config_reloaded", service=service, fingerprint=config_mod.fingerprint(fresh))

    await bus.nc.subscribe(subjects.system_event("config_reloaded"), cb=on_reload)

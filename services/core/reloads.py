"""Config reloads across processes: `POST /system/reload` validates the file and publishes
`evt.system.config_reloaded`; every service listening here re-reads its own file and applies it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import nats.errors
import nats.js.errors
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
    """Re-read and apply the config whenever a reload is announced (unless it is already the one in use).

    A reload announced while this service was starting (after it read its file, before it subscribed)
    is caught up from the last announcement kept in the EVENTS stream: without that, a runner still
    opening its mailboxes would miss it for good and serve the old config next to an API on the new one."""

    async def on_reload(msg: Msg) -> None:
        await _take(msg.data, only_if_file_matches=False)

    async def _take(data: bytes, *, only_if_file_matches: bool) -> None:
        try:
            announced = envelope.decode(data).data.get("fingerprint")
            if announced and announced == config_mod.fingerprint(current()):
                return
            fresh = config_mod.reload(current())
        except (errors.ConfigError, envelope.DecodeError) as exc:
            log.error("config_reload_failed", service=service, error=str(exc))
            return
        if only_if_file_matches and config_mod.fingerprint(fresh) != announced:
            return  # the file changed since (not announced yet): the next announcement brings it
        await apply(fresh)
        log.info("config_reloaded", service=service, fingerprint=config_mod.fingerprint(fresh))

    subject = subjects.system_event("config_reloaded")
    await bus.nc.subscribe(subject, cb=on_reload)
    await bus.nc.flush()
    try:
        last = await bus.js.get_last_msg(subjects.EVENTS, subject)
    except nats.js.errors.NotFoundError:
        return
    except (nats.errors.Error, TimeoutError) as exc:
        log.warning("config_reload_catch_up_failed", service=service, error=str(exc))
        return
    if last.data:
        await _take(last.data, only_if_file_matches=True)

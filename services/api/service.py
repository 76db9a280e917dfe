"""API service: owns the NATS connection and the read-only Postgres pool, serves create_app() on
`api.listen`, and, when Ductile's `webhooks.listen` is set, the webhook paths on that address too."""

from __future__ import annotations

import errno
import socket

import asyncpg
from aiohttp import web

from services.api import app as app_mod
from services.api import http_metrics, limits, reload, request_ids, state, webhooks
from services.core import bus as bus_mod
from services.core import config as config_mod
from services.core import db, errors, lifecycle, logging, reload_coordinator, reloads

log = logging.get("api")


def announce_laddr_auth(config: config_mod.Config) -> None:
    """Say how Laddr's paths authenticate; loudly when they take requests without credentials."""
    laddr = config.api.laddr
    if laddr.open:
        log.warning(
            "laddr_api_open",
            scopes=sorted(laddr.scopes),
            warning="api.laddr.auth is none: /api/* and /ws/* accept requests WITHOUT credentials, acting "
            "with these scopes; anyone who can reach this port can run agents and pipelines",
        )
    elif laddr.api_key is not None:
        log.info("laddr_api_key", scopes=sorted(laddr.scopes), token_name="laddr")


def port_in_use(host: str, port: int) -> errors.ConfigError:
    """What a bind to a taken port says: which port, and how to pick another."""
    return errors.ConfigError(
        f"cannot listen on {host}:{port}: the port is in use by another process; "
        f"choose another with `headrace up --port N` (`make run PORT=N`) or api.listen in the config"
    )


def ensure_port_free(host: str, port: int) -> None:
    """port_in_use now, before anything starts, when `port` cannot be bound (as the site binds it, with
    SO_REUSEADDR); port 0 is always free. A port taken between this check and the bind still gets the same
    line from `Api.start`."""
    if port == 0:
        return
    for family, kind, proto, _, address in socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM):
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise port_in_use(host, port) from None
                raise


class Api(lifecycle.Service):
    name = "api"

    def __init__(
        self,
        config: config_mod.Config,
        *,
        bus: bus_mod.Bus | None = None,
        pool: asyncpg.Pool | None = None,
        port: int | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.bus = bus
        self.pool = pool
        self._own_bus = bus is None
        self._own_pool = pool is None
        self.port = port if port is not None else config.api.port
        self.runner: web.AppRunner | None = None
        self.app: web.Application | None = None
        self.participant: reloads.Participant | None = None
        self.webhook_runner: web.AppRunner | None = None
        #: the port of the `webhooks.listen` listener (None without one)
        self.webhook_port: int | None = None

    @property
    def url(self) -> str:
        host = self.config.api.host if self.config.api.host not in ("0.0.0.0", "", "::") else "127.0.0.1"
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        self.bus = await bus_mod.open_for(self.config, name=config_mod.instance_name("api"), bus=self.bus)
        self.pool = await db.pool_for(self.config, pool=self.pool, max_size=10)
        self.app = app_mod.create_app(self.config, bus=self.bus, pool=self.pool)
        st = self.app[state.STATE]
        self.participant = reloads.Participant(
            self.bus, role=self.name, source=st.source, current=lambda: st.config, apply=self._apply_config
        )
        self.app[reload.COORDINATOR] = reload_coordinator.Coordinator(self.bus, self.participant)
        self.runner = limits.GuardedRunner(
            self.app, limits=self.config.api.limits, access_log=None, handle_signals=False
        )
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.config.api.host, self.port, backlog=1024, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise port_in_use(self.config.api.host, self.port) from None
            raise
        if self.port == 0:
            server = site._server
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # started: the loop's Server
        await self.participant.start()
        self.spawn("reloads", self.participant.run(self.stop_event))
        log.info("api_listening", url=self.url)
        announce_laddr_auth(self.config)
        if self.config.webhooks_listen is not None:
            await self._start_webhook_listener(*self.config.webhooks_listen)

    async def _start_webhook_listener(self, host: str, port: int) -> None:
        """Ductile's separate webhook server (a change of `webhooks.listen` needs a restart)."""
        assert self.app is not None
        hooks = webhooks.listener_app(
            self.app, self.config, [http_metrics.middleware, request_ids.middleware, app_mod.error_middleware]
        )
        request_ids.setup(hooks)
        self.webhook_runner = web.AppRunner(hooks, access_log=None, handle_signals=False)
        await self.webhook_runner.setup()
        site = web.TCPSite(self.webhook_runner, host, port, reuse_address=True)
        await site.start()
        self.webhook_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # started: the loop's Server
        log.info("webhooks_listening", host=host, port=self.webhook_port)

    async def _apply_config(self, fresh: config_mod.Config) -> None:
        assert self.app is not None
        reload.apply(self.app, fresh)
        if fresh.api.laddr != self.config.api.laddr:
            announce_laddr_auth(fresh)
        self.config = fresh

    async def close(self) -> None:
        if self.webhook_runner is not None:
            await self.webhook_runner.cleanup()
        if self.runner is not None:
            await self.runner.cleanup()
        if self._own_pool and self.pool is not None:
            await self.pool.close()
        if self._own_bus and self.bus is not None:
            await self.bus.close()

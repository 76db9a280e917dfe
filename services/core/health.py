"""GET /healthz of a service run alone (`headrace dispatcher|projector|runner --metrics-port N`), served next
to its GET /metrics (services/core/metrics_server.py) for compose healthchecks and Kubernetes probes.

200 `{"status": "ok", ...}` while the service runs (no stop begun, no task dead), its NATS connection is
connected and the server answers a request, and (projector) its Postgres pool answers `SELECT 1`; else 503
with `failing` naming each component. A dispatcher or projector also says whether it is this role's active
process or a standby: a standby is healthy. As the API's /healthz, error texts only for an admin token.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import asyncpg

from services.core import bus as bus_mod
from services.core import db, lifecycle
from services.core import leadership as leadership_mod
from services.core.version import version

PATH = "/healthz"
#: each check's bound: a hung NATS or Postgres makes /healthz answer 503 after this, not hang the probe
CHECK_TIMEOUT_S = 2.0
#: the NATS check's request (JetStream's account info): a round trip through the server; the reply is not read
JS_INFO = "$JS.API.INFO"


def _error(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class Probe:
    """What /healthz checks of one service; the getters read its connections as they are now."""

    def __init__(
        self,
        service: lifecycle.Service,
        *,
        bus: Callable[[], bus_mod.Bus | None],
        pool: Callable[[], asyncpg.Pool | None] | None = None,
        leadership: Callable[[], leadership_mod.Leadership | None] | None = None,
    ) -> None:
        self.service = service
        self.bus = bus
        self.pool = pool
        self.leadership = leadership
        self.started = time.monotonic()

    def _running(self) -> tuple[bool, str | None]:
        if self.service.failure is not None:
            return False, f"a task died: {self.service.failure!r}"
        if self.service.stop_event.is_set():
            return False, "stopping"
        return True, None

    async def _nats(self) -> tuple[bool, str, str | None]:
        """(ok, connection state, error): connected, and the server answers a request within the bound (a
        paused server keeps the socket open, so the state alone would stay `connected` for minutes). A request
        and not `nc.flush(timeout)`: a PONG arriving after a timed-out flush stops nats-py's read loop."""
        bus = self.bus()
        if bus is None:
            return False, "absent", "no NATS connection"
        state = bus.connection_state
        if not bus.nc.is_connected:
            return False, state, f"not connected to NATS ({state})"
        try:
            await bus.nc.request(JS_INFO, b"", timeout=CHECK_TIMEOUT_S)
        except Exception as exc:  # any failure of the check is the answer
            return False, state, f"NATS did not answer: {_error(exc)}"
        return True, state, None

    async def _postgres(self) -> tuple[bool, str | None]:
        pool = self.pool() if self.pool is not None else None
        if pool is None:
            return False, "no Postgres pool"
        return await db.answers(pool, timeout_s=CHECK_TIMEOUT_S)

    async def report(self, *, admin: bool) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body)."""
        checks: dict[str, tuple[bool, str | None]] = {}
        running = self._running()
        if self.pool is not None:
            (nats_ok, state, nats_error), checks["postgres"] = await asyncio.gather(self._nats(), self._postgres())
        else:
            nats_ok, state, nats_error = await self._nats()
        components: dict[str, dict[str, Any]] = {"service": {"ok": running[0]}}
        components["nats"] = {"ok": nats_ok, "state": state}
        for name, (ok, _) in checks.items():
            components[name] = {"ok": ok}
        errors = {"service": running[1], "nats": nats_error, **{name: err for name, (_, err) in checks.items()}}
        if admin:
            for name, error in errors.items():
                if error:
                    components[name]["error"] = error
        failing = [name for name, component in components.items() if not component["ok"]]
        body: dict[str, Any] = {
            "status": "error" if failing else "ok",
            "service": self.service.name,
            "version": version(),
            "uptime_seconds": round(time.monotonic() - self.started, 3),
            "components": components,
        }
        if self.leadership is not None:
            held = self.leadership()
            active = held is not None and held.active
            body["leadership"] = {"role": self.service.name, "state": "active" if active else "standby"}
            if admin and held is not None:
                body["leadership"]["source"] = held.source
        if failing:
            body["failing"] = failing
        return (503 if failing else 200), body

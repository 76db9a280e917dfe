"""GET /system/doctor and GET /system/selfcheck (Ductile's system_handlers.go shape):

    {"ok": bool, "captured_at": "...", "checks": [{"name", "ok", "severity"?, "detail", "field"?}]}

doctor: the config file on disk is loaded and validated again (without applying it, as a reload
would); a load error is a check with severity "error" and makes `ok` false; broken plugin manifests
and configured plugins without a manifest are warnings (all checks listed are problems, `ok: false`;
warnings leave the top `ok` alone). selfcheck: the running gateway's own checks (NATS, Postgres,
runners alive, plugin catalog), each `ok` true or false, no severity; and Headrace's own keys
`consumers`: each consumer's lag (services/api/consumer_lag.py), or `consumers_error` when it
cannot be read (NATS or Postgres down); `leaders`: who leads the dispatchers and the projectors
(as in /healthz, with the instance names: the route needs system:ro).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from services.api import analytics, auth, consumer_lag, state, system
from services.core import agents, envelope, errors
from services.core import config as config_mod

routes = web.RouteTableDef()

SYSTEM_READ = ("system:ro", "system:rw")


def _check(
    name: str, ok: bool, detail: str, *, severity: str | None = None, field: str | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "ok": ok}
    if severity is not None:
        out["severity"] = severity
    out["detail"] = detail
    if field is not None:
        out["field"] = field
    return out


def _report(ok: bool, checks: list[dict[str, Any]], **extra: Any) -> web.Response:
    return web.json_response(
        {"ok": ok, "captured_at": envelope.rfc3339(envelope.now()), "checks": checks, **extra}, dumps=state.dumps
    )


def _config_problems(current: config_mod.Config) -> tuple[config_mod.Config | None, str | None]:
    """(the config as the file reads now, or None; the load error)."""
    if current.path is None:
        return current, None
    try:
        return config_mod.reload(current), None
    except errors.ConfigError as exc:
        return None, exc.message


@routes.get("/system/doctor")
async def doctor(request: web.Request) -> web.Response:
    auth.require(request, *SYSTEM_READ)
    st = state.of(request)
    fresh, error = await asyncio.to_thread(_config_problems, st.config)
    checks: list[dict[str, Any]] = []
    if error is not None:
        checks.append(_check("config", False, error, severity="error"))
    shown = fresh if fresh is not None else st.config
    catalog = config_mod.plugin_catalog(shown)
    for broken in catalog.errors:
        checks.append(_check("plugins", False, f"{broken.path}: {broken.error}", severity="warning"))
    for name in sorted(shown.plugins):
        if shown.plugin(name).enabled and name not in catalog.plugins and name not in agents.RESERVED:
            checks.append(
                _check(
                    "plugins",
                    False,
                    f"plugin {name!r} is configured but no manifest defines it",
                    severity="warning",
                    field=f"plugins.{name}",
                )
            )
    return _report(error is None, checks)


@routes.get("/system/selfcheck")
async def selfcheck(request: web.Request) -> web.Response:
    auth.require(request, *SYSTEM_READ)
    st = state.of(request)
    (nats_ok, _, nats_error), (pg_ok, pg_error) = await asyncio.gather(system.check_nats(st), system.check_postgres(st))
    checks = [
        _check("nats", nats_ok, "connected, work stream readable" if nats_ok else nats_error or "unavailable"),
        _check("postgres", pg_ok, "read models reachable" if pg_ok else pg_error or "unavailable"),
    ]
    if nats_ok:
        try:
            runners = await asyncio.wait_for(analytics.runners(st), timeout=system.CHECK_TIMEOUT_S)
        except Exception as exc:  # any failure of the check is its answer
            checks.append(_check("runners", False, f"runner heartbeats unreadable: {str(exc) or type(exc).__name__}"))
        else:
            checks.append(
                _check(
                    "runners",
                    bool(runners),
                    f"{len(runners)} runner(s) alive"
                    if runners
                    else "no runner has sent a heartbeat recently: jobs would wait",
                )
            )
    broken = len(st.catalog.errors)
    checks.append(
        _check(
            "plugins",
            broken == 0,
            f"{len(st.catalog.plugins)} plugin(s) loaded" + (f", {broken} manifest(s) broken" if broken else ""),
        )
    )
    lag, leading = await asyncio.gather(_lag(st, nats_ok), system.leaders(st, admin=True))
    return _report(all(c["ok"] for c in checks), checks, **lag, leaders=leading)


async def _lag(st: state.ApiState, nats_ok: bool) -> dict[str, Any]:
    """`consumers` (each one's lag), or `consumers_error` saying why it cannot be read."""
    if not nats_ok:
        return {"consumers_error": "NATS is unavailable"}
    try:
        return {"consumers": await asyncio.wait_for(consumer_lag.consumers(st), timeout=system.CHECK_TIMEOUT_S)}
    except Exception as exc:  # any failure of the read is its answer
        return {"consumers_error": str(exc) or type(exc).__name__}

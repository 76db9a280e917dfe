"""GET / (discovery index, both dialects: Laddr's `service, version, status, dashboard, docs` among ours) and GET /healthz (real checks of NATS and Postgres,
Ductile's keys `plugins_circuit_open` and `posture`, and ours `leaders`: the active dispatcher's lease and the
projector holder's record, with the standbys counted; internals such as paths and instance names only for an
admin token)."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import orjson
from aiohttp import web

from services.api import auth, state
from services.core import db, leases, subjects
from services.core.version import version

routes = web.RouteTableDef()

CHECK_TIMEOUT_S = 2.0


@routes.get("/")
async def index(request: web.Request) -> web.Response:
    st = state.of(request)
    return web.json_response(
        {
            "name": "Headrace Gateway",
            "description": "Event-sourced job and agent gateway: the Ductile and Laddr APIs on NATS JetStream.",
            "service": "Headrace",
            "version": version(),
            "status": "running",
            # Laddr's keys: its dashboard (a separate app) and its API docs (Swagger UI once /docs is served)
            "dashboard": st.config.api.laddr.dashboard,
            "docs": "/docs" if _serves(request.app, "/docs") else "/openapi.json",
            "uptime_seconds": st.uptime_s,
            "discovery": {
                "health": "/healthz",
                "skills": "/skills",
                "plugins": "/plugins",
                "openapi": "/openapi.json",
                "ai_plugin": "/.well-known/ai-plugin.json",
            },
        }
    )


def _serves(app: web.Application, path: str) -> bool:
    return any(r.resource is not None and r.resource.canonical == path for r in app.router.routes())


async def check_nats(st: state.ApiState) -> tuple[bool, int | None, str | None]:
    """(ok, work queue depth, error)."""
    if not st.bus.nc.is_connected:
        return False, None, f"not connected to NATS ({st.bus.connection_state})"
    try:
        depth = await asyncio.wait_for(st.bus.pending_work(), timeout=CHECK_TIMEOUT_S)
    except Exception as exc:  # any failure of the check is the answer
        return False, None, str(exc) or type(exc).__name__
    return True, depth, None


async def check_postgres(st: state.ApiState) -> tuple[bool, str | None]:
    return await db.answers(st.pool, timeout_s=CHECK_TIMEOUT_S)


async def open_circuits(st: state.ApiState) -> int:
    """How many plugins have a command whose circuit breaker is open (the dispatcher's KV records).
    Ductile always answers 0 here (a placeholder); we count, and a failing read counts nothing."""
    try:
        kv = await st.bus.kv(subjects.KV_BREAKERS)
        keys = await asyncio.wait_for(kv.keys(), timeout=CHECK_TIMEOUT_S)
    except Exception:  # no bucket yet, no keys (nats-py raises), or NATS down: nothing is open that we know of
        return 0
    plugins: set[str] = set()
    for key in keys:
        try:
            entry = await asyncio.wait_for(kv.get(key), timeout=CHECK_TIMEOUT_S)
            record = orjson.loads(entry.value or b"{}")
        except Exception:  # deleted meanwhile, or unreadable: not known to be open
            continue
        if isinstance(record, dict) and record.get("state") == "open":
            plugins.add(key.rpartition(".")[0])
    return len(plugins)


async def leaders(st: state.ApiState, *, admin: bool) -> dict[str, Any] | None:
    """Per role (dispatcher, projector): whether a leader holds it now, since and until when, how many standbys
    wait (services/core/leases.py); None when the records cannot be read (NATS down)."""
    if not st.bus.nc.is_connected:
        return None
    try:
        found = await asyncio.wait_for(
            asyncio.gather(*(leases.status(st.bus, role) for role in leases.ROLES)), timeout=CHECK_TIMEOUT_S
        )
    except Exception:  # any failure of the read: unknown
        return None
    return {status.role: status.public(admin=admin) for status in found}


def _is_admin(request: web.Request) -> bool:
    """A valid token with the `*` scope: it may see paths and error details; anyone else may not."""
    presented = auth.presented_token(request)
    principal = request.app[auth.TABLE].find(presented) if presented else None
    return principal is not None and auth.grants(principal.scopes, "*")


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """Public: status, counts and which component fails. Paths, error texts and broken manifests
    (internals that help an attacker, not a load balancer) only with an admin token."""
    st = state.of(request)
    admin = _is_admin(request)
    (nats_ok, depth, nats_error), (pg_ok, pg_error), circuits_open, leading = await asyncio.gather(
        check_nats(st), check_postgres(st), open_circuits(st), leaders(st, admin=admin)
    )
    body: dict[str, Any] = {
        "status": "ok" if nats_ok and pg_ok else "error",
        "uptime_seconds": st.uptime_s,
        "queue_depth": depth,
        "plugins_loaded": len(st.catalog.plugins),
        "plugins_circuit_open": circuits_open,
        "version": version(),
        "posture": "gateway",
        "components": {
            "nats": {"ok": nats_ok, **({"error": nats_error} if nats_error and admin else {})},
            "postgres": {"ok": pg_ok, **({"error": pg_error} if pg_error and admin else {})},
        },
        "leaders": leading,
    }
    if admin:
        if st.config.path:
            body["config_path"] = str(st.config.path.parent)
        body["binary_path"] = sys.argv[0]
        if st.catalog.errors:
            body["plugin_errors"] = [{"path": e.path, "error": e.error} for e in st.catalog.errors]
    elif st.catalog.errors:
        body["plugins_broken"] = len(st.catalog.errors)
    failing = [name for name, ok in (("nats", nats_ok), ("postgres", pg_ok)) if not ok]
    if failing:
        body["failing"] = failing
    return web.json_response(body, status=200 if not failing else 503)

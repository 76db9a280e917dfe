"""Laddr: GET /api/health (open) and the container-log routes GET /api/logs/containers and
GET /api/logs/containers/{container_name}.

/api/health is Laddr's shape, always 200 as Laddr's: `components` holds Laddr's string labels
(`database`, `storage`, `message_bus`) plus `tracing: {enabled, backend}`; Headrace's real checks of
each component (Laddr checks nothing) are under `checks`, and `status` is `ok` or `degraded`. A
load balancer wants GET /healthz, which answers 503 when a component fails.

Headrace runs no Docker containers (its services are processes; plugins, subprocesses), so the
container-log routes answer 503 `{"detail": <why>}` like a Laddr without the Docker SDK, after
checking their query parameters as Laddr does (`tail` an integer, `timestamps` a boolean).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from services.api import bodies, state, system
from services.core import errors
from services.core.version import version

routes = web.RouteTableDef()

#: Laddr's labels for what Headrace runs on (Laddr: "PostgreSQL"/"SQLite", "MinIO"/..., "REDIS"/...)
LABELS = {"database": "PostgreSQL", "storage": "NATS Object Store", "message_bus": "NATS JetStream"}
#: traces are rows the projector writes to Postgres from `evt.trace.*`, always on
TRACING = {"enabled": True, "backend": "database"}
NO_CONTAINERS = (
    "Container logs are not available: Headrace runs no Docker containers (its services are "
    "processes). Read job logs with GET /job-logs and the services' logs from their process "
    "supervisor"
)


async def _check(what: str, kind: str, probe: Any) -> dict[str, Any]:
    try:
        await asyncio.wait_for(probe, timeout=system.CHECK_TIMEOUT_S)
    except Exception as exc:  # any failure of the check is the answer
        return {"type": kind, "status": "error", "error": f"{what}: {str(exc) or type(exc).__name__}"}
    return {"type": kind, "status": "ok"}


async def _storage(st: state.ApiState) -> None:
    store = await st.bus.object_store(st.config.offload_bucket)
    await store.status()


async def _message_bus(st: state.ApiState) -> None:
    ok, _, error = await system.check_nats(st)
    if not ok:
        raise errors.TransientError(error or "NATS check failed")


@routes.get("/api/health")
async def health(request: web.Request) -> web.Response:
    st = state.of(request)
    database, storage, bus = await asyncio.gather(
        _check("postgres", "postgresql", st.pool.fetchval("SELECT 1")),
        _check(f"object store {st.config.offload_bucket}", "nats-object-store", _storage(st)),
        _check("nats", "nats-jetstream", _message_bus(st)),
    )
    checks = {"database": database, "storage": storage, "message_bus": bus}
    ok = all(c["status"] == "ok" for c in checks.values())
    return web.json_response(
        {
            "status": "ok" if ok else "degraded",
            "version": version(),
            "components": {**LABELS, "tracing": TRACING},
            "checks": checks,
        },
        dumps=state.dumps,
    )


@routes.get("/api/logs/containers")
async def list_containers(request: web.Request) -> web.Response:
    raise errors.ServiceUnavailable(NO_CONTAINERS)


@routes.get("/api/logs/containers/{container_name}")
async def container_logs(request: web.Request) -> web.Response:
    bodies.int_param(request, "tail", default=100, minimum=-(2**31))  # Laddr: `tail: int`, no bounds
    bodies.bool_param(request, "timestamps", default=True)
    raise errors.ServiceUnavailable(NO_CONTAINERS, container=request.match_info["container_name"])

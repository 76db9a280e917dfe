"""GET /analytics/queue (live: JetStream and runner heartbeats) and GET /analytics/summary
(the last 24 hours of the jobs read model). Both need the `*` scope.

Both carry Ductile's keys too (handlers.go handleQueueMetrics / handleAnalyticsSummary): the queue
adds `running_count`, `delayed_count`, `dead_count`, `active_jobs`, `plugin_lanes`; the summary adds
`window` ("24h") and `stats` (attempts by status completed in the window, zero statuses left out).

Queue depth comes from one `stream_info` of WORK grouped by subject (`work.<plugin>.<cmd>`
waiting or in flight, `delay.work.<plugin>.<cmd>` parked for a retry backoff); in-flight
counts and parallelism from each plugin's durable runner consumer; runners from the
`runner.*` presence records in the `agents` KV bucket.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import nats.errors
import nats.js.errors
import orjson
from aiohttp import web

from services.api import auth, state, views
from services.core import envelope, errors, jobstate, subjects
from services.runner import heartbeat

routes = web.RouteTableDef()

WINDOW_HOURS = 24
STATUSES = ("queued", "running", "succeeded", "failed", "timed_out", "dead", "skipped", "cancelled")

#: one scan of the window: per-status counts and the p50/p95 of completed_at - started_at (NULLs,
#: i.e. jobs that never ran or have not finished, are ignored), per plugin and overall (plugin NULL)
SUMMARY_SQL = """
SELECT plugin, GROUPING(plugin) AS all_plugins, count(*) AS total,
       count(*) FILTER (WHERE status = 'queued') AS queued,
       count(*) FILTER (WHERE status = 'running') AS running,
       count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'timed_out') AS timed_out,
       count(*) FILTER (WHERE status = 'dead') AS dead,
       count(*) FILTER (WHERE status = 'skipped') AS skipped,
       count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
       percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (
           ORDER BY date_part('epoch', completed_at - started_at) * 1000) AS pct
FROM jobs
WHERE created_at >= now() - make_interval(hours => $1)
GROUP BY GROUPING SETS ((plugin), ())
"""


#: Ductile's queue metrics (queue.go Metrics) from the jobs read model: running jobs oldest first, dead jobs
ACTIVE_SQL = """
SELECT job_id, plugin, command, started_at FROM jobs WHERE status = 'running'
ORDER BY started_at NULLS LAST, job_id LIMIT $1
"""
DEAD_COUNT_SQL = "SELECT count(*) FROM jobs WHERE status = 'dead'"
#: at most this many running jobs are listed (Ductile lists all; a runaway backlog should not make a huge body)
ACTIVE_JOBS_LIMIT = 1000
#: Ductile's summary (handleAnalyticsSummary): attempts (job_logs rows) by status, completed in the window
ATTEMPT_STATS_SQL = """
SELECT status, count(*) AS n FROM job_logs
WHERE completed_at >= now() - make_interval(hours => $1)
GROUP BY status ORDER BY status
"""


async def _ductile_queue(st: state.ApiState, delayed: int) -> dict[str, Any]:
    """The keys of Ductile's /analytics/queue: running_count, delayed_count, dead_count, and active_jobs /
    plugin_lanes (left out when empty, as Ductile does)."""
    async with st.pool.acquire() as conn:
        active = await conn.fetch(ACTIVE_SQL, ACTIVE_JOBS_LIMIT)
        dead = await conn.fetchval(DEAD_COUNT_SQL)
    out: dict[str, Any] = {"running_count": len(active), "delayed_count": delayed, "dead_count": int(dead)}
    if active:
        out["active_jobs"] = [{"job_id": r["job_id"], "plugin": r["plugin"], "command": r["command"],
                               "started_at": views.timestamp(r["started_at"])} for r in active]
        lanes: dict[str, int] = {}
        for r in active:
            lanes[r["plugin"]] = lanes.get(r["plugin"], 0) + 1
        out["plugin_lanes"] = [{"plugin": p, "active_count": n} for p, n in sorted(lanes.items())]
    return out


async def _nats(coro: Any, what: str) -> Any:
    try:
        return await coro
    except (nats.errors.Error, TimeoutError) as exc:
        raise errors.TransientError(f"{what} failed: {exc}") from exc


async def _consumer(st: state.ApiState, plugin: str) -> tuple[int, int | None]:
    """(in flight, max_ack_pending) of the plugin's runner consumer; (0, None) when no runner made one yet."""
    try:
        info = await st.bus.js.consumer_info(subjects.WORK, subjects.runner_consumer(plugin))
    except nats.js.errors.NotFoundError:
        return 0, None
    except ValueError:  # a plugin name that cannot be a subject token has no consumer
        return 0, None
    return int(info.num_ack_pending or 0), info.config.max_ack_pending


async def runners(st: state.ApiState) -> list[dict[str, Any]]:
    """The presence records of the runners seen recently."""
    kv = await st.bus.kv(subjects.KV_AGENTS)
    bucket_stream = f"KV_{subjects.KV_AGENTS}"
    prefix = f"$KV.{subjects.KV_AGENTS}."
    info = await st.bus.js.stream_info(bucket_stream, subjects_filter=prefix + heartbeat.KEY_PREFIX + "*")
    keys = [subject[len(prefix):] for subject in (info.state.subjects or {})]

    async def read(key: str) -> dict[str, Any] | None:
        try:
            entry = await kv.get(key)
        except nats.js.errors.NotFoundError:  # deleted on a clean stop, or expired
            return None
        if not entry.value:
            return None
        try:
            record = orjson.loads(entry.value)
        except orjson.JSONDecodeError:
            return None
        return record if isinstance(record, dict) and record.get("kind") == "runner" else None

    now = envelope.now()
    records = await asyncio.gather(*(read(key) for key in keys))
    return [r for r in records if r is not None and heartbeat.is_fresh(r, now)]


@routes.get("/analytics/queue")
async def queue(request: web.Request) -> web.Response:
    auth.require(request, "*")
    st = state.of(request)
    info = await _nats(st.bus.js.stream_info(subjects.WORK, subjects_filter=">"), "stream info WORK")
    waiting: dict[str, int] = {}
    delayed: dict[str, int] = {}
    for subject, n in (info.state.subjects or {}).items():
        parts = subject.split(".")
        if len(parts) >= 2 and parts[0] == "work":
            waiting[parts[1]] = waiting.get(parts[1], 0) + int(n)
        elif len(parts) >= 3 and parts[0] == "delay" and parts[1] == "work":
            delayed[parts[2]] = delayed.get(parts[2], 0) + int(n)
    names = sorted({*(p for p in st.catalog.plugins if st.config.plugin(p).enabled), *waiting, *delayed})
    consumers = await _nats(asyncio.gather(*(_consumer(st, name) for name in names)), "consumer info")
    alive = await _nats(runners(st), "runner heartbeats")

    plugins: dict[str, dict[str, Any]] = {}
    for name, (in_flight, parallelism) in zip(names, consumers, strict=True):
        # a work-queue stream holds an item until it is acked: what is not in flight is waiting
        plugins[name] = {
            "queued": max(0, waiting.get(name, 0) - in_flight),
            "in_flight": in_flight,
            "delayed": delayed.get(name, 0),
            "parallelism": parallelism,
        }
    capacity = sum(int(r.get("capacity") or 0) for r in alive)
    busy = sum(int(r.get("busy") or 0) for r in alive)
    body = {
        "queue_depth": sum(p["queued"] for p in plugins.values()),
        **await _ductile_queue(st, sum(p["delayed"] for p in plugins.values())),
        "in_flight": sum(p["in_flight"] for p in plugins.values()),
        "plugins": plugins,
        "runners": {
            "count": len(alive),
            "capacity": capacity,
            "busy": busy,
            "utilisation": round(busy / capacity, 4) if capacity else 0.0,
            "instances": [
                {k: r.get(k) for k in ("instance", "plugins", "capacity", "busy", "last_seen")} for r in alive
            ],
        },
        "timestamp": views.timestamp(envelope.now()),
    }
    return web.json_response(body, dumps=state.dumps)


def _stats(by_status: dict[str, int], p50: float | None, p95: float | None, *, total: int) -> dict[str, Any]:
    final = sum(n for status, n in by_status.items() if status in jobstate.FINAL_STATUSES)
    return {
        "total": total,
        "by_status": by_status,
        "success_rate": round(by_status.get("succeeded", 0) / final, 4) if final else None,
        "duration_ms": {
            "p50": round(p50, 1) if p50 is not None else None,
            "p95": round(p95, 1) if p95 is not None else None,
        },
    }


async def summary_rows(conn: asyncpg.Connection, hours: int = WINDOW_HOURS) -> list[asyncpg.Record]:
    """One row per plugin and one overall row (all_plugins) for the last `hours`."""
    return await conn.fetch(SUMMARY_SQL, hours)


def _row_stats(row: asyncpg.Record) -> dict[str, Any]:
    by_status = {status: int(row[status]) for status in STATUSES}
    p50, p95 = row["pct"] or (None, None)
    return _stats(by_status, p50, p95, total=int(row["total"]))


@routes.get("/analytics/summary")
async def summary(request: web.Request) -> web.Response:
    auth.require(request, "*")
    st = state.of(request)
    async with st.pool.acquire() as conn:
        rows = await summary_rows(conn)
        attempts = await conn.fetch(ATTEMPT_STATS_SQL, WINDOW_HOURS)
    overall = next((r for r in rows if r["all_plugins"]), None)
    empty = _stats(dict.fromkeys(STATUSES, 0), None, None, total=0)
    body = {
        "window": f"{WINDOW_HOURS}h",
        "stats": {r["status"]: int(r["n"]) for r in attempts},
        "window_hours": WINDOW_HOURS,
        **(_row_stats(overall) if overall is not None else empty),
        "plugins": {r["plugin"]: _row_stats(r) for r in sorted(rows, key=lambda r: r["plugin"] or "")
                    if not r["all_plugins"]},
        "timestamp": views.timestamp(envelope.now()),
    }
    return web.json_response(body, dumps=state.dumps)

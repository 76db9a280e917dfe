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

import nats.errors
import nats.js.errors
import orjson
from aiohttp import web

from services.api import auth, state, views
from services.core import agents, db, envelope, errors, jobstate, subjects
from services.runner import heartbeat

routes = web.RouteTableDef()

WINDOW_HOURS = 24
STATUSES = ("queued", "running", "succeeded", "failed", "timed_out", "dead", "skipped", "cancelled")

#: the window is the last $1 hours; its whole hours are counted by the projector (job_counts and
#: attempt_counts, migrations/012) and only the rows of the partial hour it starts in are read
SINCE = "now() - make_interval(hours => $1)"
WHOLE_HOURS_FROM = f"date_trunc('hour', {SINCE} + interval '1 hour' - interval '1 microsecond', 'UTC')"
#: jobs created in the window by plugin and status
JOB_COUNTS_SQL = f"""
SELECT plugin, status, sum(n)::bigint AS n FROM (
    SELECT plugin, status, n FROM job_counts WHERE hour >= {WHOLE_HOURS_FROM}
    UNION ALL
    SELECT plugin, status, 1 FROM jobs WHERE created_at >= {SINCE} AND created_at < {WHOLE_HOURS_FROM}
) AS counted
GROUP BY plugin, status
"""
#: the p50/p95 of completed_at - started_at of the window's jobs that ran and finished, per plugin and
#: overall (plugin NULL)
DURATIONS_SQL = f"""
SELECT plugin, GROUPING(plugin) AS all_plugins,
       percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (
           ORDER BY date_part('epoch', completed_at - started_at) * 1000) AS pct
FROM jobs
WHERE created_at >= {SINCE} AND started_at IS NOT NULL AND completed_at IS NOT NULL
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
ATTEMPT_STATS_SQL = f"""
SELECT status, sum(n)::bigint AS n FROM (
    SELECT status, n FROM attempt_counts WHERE hour >= {WHOLE_HOURS_FROM}
    UNION ALL
    SELECT status, 1 FROM job_logs WHERE completed_at >= {SINCE} AND completed_at < {WHOLE_HOURS_FROM}
) AS counted
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
        out["active_jobs"] = [
            {
                "job_id": r["job_id"],
                "plugin": r["plugin"],
                "command": r["command"],
                "started_at": views.timestamp(r["started_at"]),
            }
            for r in active
        ]
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
    """(in flight, max_ack_pending) of the plugin's runner consumer; (0, None) when no runner made one yet.
    Agent runs (work.agent.<agent>) have one consumer per agent: their sums."""
    if plugin == agents.AGENT:
        durables = []
        for agent in sorted(st.config.agents):
            try:
                durables.append(subjects.agent_consumer(agent))
            except ValueError:  # a name that cannot be a subject token has no consumer
                continue
        each = await asyncio.gather(*(_durable(st, durable) for durable in durables))
        limits = [limit for _, limit in each if limit is not None]
        return sum(n for n, _ in each), sum(limits) if limits else None
    try:
        durable = subjects.runner_consumer(plugin)
    except ValueError:  # a plugin name that cannot be a subject token has no consumer
        return 0, None
    return await _durable(st, durable)


async def _durable(st: state.ApiState, durable: str) -> tuple[int, int | None]:
    try:
        info = await st.bus.js.consumer_info(subjects.WORK, durable)
    except nats.js.errors.NotFoundError:
        return 0, None
    return int(info.num_ack_pending or 0), info.config.max_ack_pending


async def runners(st: state.ApiState) -> list[dict[str, Any]]:
    """The presence records of the runners seen recently."""
    kv = await st.bus.kv(subjects.KV_AGENTS)
    bucket_stream = f"KV_{subjects.KV_AGENTS}"
    prefix = f"$KV.{subjects.KV_AGENTS}."
    info = await st.bus.js.stream_info(bucket_stream, subjects_filter=prefix + heartbeat.KEY_PREFIX + "*")
    keys = [subject[len(prefix) :] for subject in (info.state.subjects or {})]

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


async def summary_counts(conn: db.Conn, hours: int = WINDOW_HOURS) -> dict[str, Any]:
    """`stats`, the overall figures and `plugins` of the summary of the last `hours`, read in one
    snapshot (and one now())."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        counts = await conn.fetch(JOB_COUNTS_SQL, hours)
        durations = await conn.fetch(DURATIONS_SQL, hours)
        attempts = await conn.fetch(ATTEMPT_STATS_SQL, hours)
    by_plugin: dict[str, dict[str, int]] = {}
    for r in counts:
        by_plugin.setdefault(r["plugin"], dict.fromkeys(STATUSES, 0))[r["status"]] = int(r["n"])
    pct = {None if r["all_plugins"] else r["plugin"]: r["pct"] for r in durations}
    overall: dict[str, int] = {}
    for by_status in by_plugin.values():
        for status, n in by_status.items():
            overall[status] = overall.get(status, 0) + n

    def stats(by_status: dict[str, int], plugin: str | None) -> dict[str, Any]:
        p50, p95 = pct.get(plugin) or (None, None)
        return _stats({s: by_status.get(s, 0) for s in STATUSES}, p50, p95, total=sum(by_status.values()))

    return {
        "stats": {r["status"]: int(r["n"]) for r in attempts if r["n"]},
        **stats(overall, None),
        "plugins": {plugin: stats(by_plugin[plugin], plugin) for plugin in sorted(by_plugin)},
    }


@routes.get("/analytics/summary")
async def summary(request: web.Request) -> web.Response:
    auth.require(request, "*")
    st = state.of(request)
    async with st.pool.acquire() as conn:
        counts = await summary_counts(conn)
    body = {
        "window": f"{WINDOW_HOURS}h",
        "stats": counts.pop("stats"),
        "window_hours": WINDOW_HOURS,
        **counts,
        "timestamp": views.timestamp(envelope.now()),
    }
    return web.json_response(body, dumps=state.dumps)

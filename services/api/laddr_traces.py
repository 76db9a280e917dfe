"""Laddr: GET /api/traces (limit, job_id, agent/agent_name), /api/traces/grouped, /api/traces/{id},
GET /api/metrics.

Traces are rows of the `traces` table (projected from `evt.trace.*`; the id is the event's
stream sequence); every item carries `parent_id` (null where the row has none). Every metric is
one SQL aggregate over `jobs` or `traces`, except `active_agents_count`, which counts the agents
GET /api/agents shows as active. The job counts are over root jobs, the ones GET /api/jobs lists
(a prompt's agents and an agent's tool calls are parts of their root job, not jobs of their own;
`all_jobs` counts every job); a completed job is a succeeded one, a failed one failed, timed out
or dead; `avg_latency_ms` (an int) is over the completed ones; `total_tokens` counts prompt +
completion for a call that reports no total.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.api import auth, bodies, laddr_agents, state, views
from services.api.laddr_common import tokens
from services.core import envelope, errors

routes = web.RouteTableDef()

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
#: every column, so `parent_id` is there once the traces table has it (a row without it reads null)
LIST_SQL = "SELECT * FROM traces {where} ORDER BY id {order} {limit}"
#: the `limit` jobs with the newest traces, each with all its traces (Laddr reads a window of rows and
#: so undercounts long jobs)
GROUPED_SQL = """
WITH recent AS (
    SELECT job_id, max(id) AS last_id FROM traces WHERE job_id <> '' GROUP BY job_id ORDER BY last_id DESC LIMIT $1
)
SELECT traces.* FROM traces JOIN recent USING (job_id) ORDER BY traces.job_id, traces.id
"""
ONE_SQL = "SELECT * FROM traces WHERE id = $1"
MAX_TRACE_ID = 2**63 - 1
#: root jobs (what GET /api/jobs lists): a prompt's agents and an agent's tool calls are parts of one job
JOB_METRICS_SQL = """
SELECT count(*) AS total_jobs,
       count(*) FILTER (WHERE status = 'succeeded') AS completed_jobs,
       count(*) FILTER (WHERE status IN ('failed', 'timed_out', 'dead')) AS failed_jobs,
       count(*) FILTER (WHERE status IN ('queued', 'running')) AS active_jobs,
       coalesce(avg(extract(epoch FROM completed_at - created_at) * 1000) FILTER (WHERE status = 'succeeded'), 0)
           AS avg_latency_ms
FROM jobs WHERE parent_job_id IS NULL
"""
ALL_JOBS_SQL = "SELECT count(*) FROM jobs"
#: a call whose total is missing or zero counts prompt + completion (as token_usage does)
TRACE_METRICS_SQL = f"""
SELECT count(*) FILTER (WHERE event_type = 'cache_hit') AS cache_hits,
       count(*) FILTER (WHERE event_type = 'tool_call') AS tool_calls,
       coalesce(sum(coalesce(nullif({tokens("total_tokens")}, 0),
                             coalesce({tokens("prompt_tokens")}, 0) + coalesce({tokens("completion_tokens")}, 0)))
                FILTER (WHERE event_type = 'llm_usage'), 0) AS total_tokens
FROM traces
"""


def trace_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "job_id": row["job_id"],
        "agent_name": row["agent_name"],
        "event_type": row["event_type"],
        "parent_id": row.get("parent_id"),
        "payload": row["payload"],
        "timestamp": views.timestamp(row["timestamp"]),
    }


@routes.get("/api/traces")
async def list_traces(request: web.Request) -> web.Response:
    """Newest first, `limit` (default 100) of them; with `job_id`: all of that job's, oldest first (as
    Laddr), `limit` applied only when given. `agent` (the reference) and `agent_name` (Laddr) both filter."""
    auth.require(request, "jobs:ro")
    st = state.of(request)
    limit = bodies.int_param(request, "limit", default=DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
    job_id = request.query.get("job_id")
    clauses: list[str] = []
    args: list[object] = []
    for column, parameter in (("job_id", "job_id"), ("agent_name", "agent"), ("agent_name", "agent_name")):
        value = request.query.get(parameter)
        if value:
            args.append(value)
            clauses.append(f"{column} = ${len(args)}")
    bounded = not job_id or bool(request.query.get("limit"))
    if bounded:
        args.append(limit)
    sql = LIST_SQL.format(
        where="WHERE " + " AND ".join(clauses) if clauses else "",
        order="ASC" if job_id else "DESC",
        limit=f"LIMIT ${len(args)}" if bounded else "",
    )
    rows = await st.pool.fetch(sql, *args)
    return web.json_response({"traces": [trace_view(dict(r)) for r in rows]}, dumps=state.dumps)


@routes.get("/api/traces/grouped")
async def grouped_traces(request: web.Request) -> web.Response:
    """The `limit` jobs with the newest traces, each with all its traces oldest first, the job that
    started last first (Laddr's order)."""
    auth.require(request, "jobs:ro")
    st = state.of(request)
    limit = bodies.int_param(request, "limit", default=50, minimum=1, maximum=MAX_LIMIT)
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in await st.pool.fetch(GROUPED_SQL, limit):
        groups.setdefault(row["job_id"], []).append(trace_view(dict(row)))
    out = [
        {
            "job_id": job_id,
            "trace_count": len(traces),
            "agents": sorted({t["agent_name"] for t in traces if t["agent_name"]}),
            "start_time": traces[0]["timestamp"],
            "end_time": traces[-1]["timestamp"],
            "traces": traces,
        }
        for job_id, traces in groups.items()
    ]
    out.sort(key=lambda g: g["traces"][0]["id"], reverse=True)
    return web.json_response({"grouped_traces": out}, dumps=state.dumps)


@routes.get("/api/traces/{trace_id}")
async def get_trace(request: web.Request) -> web.Response:
    auth.require(request, "jobs:ro")
    raw = request.match_info["trace_id"]
    try:
        trace_id = int(raw)
    except ValueError:
        trace_id = 0
    row = await state.of(request).pool.fetchrow(ONE_SQL, trace_id) if 0 < trace_id <= MAX_TRACE_ID else None
    if row is None:  # a non-numeric id cannot name a trace either (Laddr: 404)
        raise errors.NotFound(f"trace {raw!r} not found")
    return web.json_response(trace_view(dict(row)), dumps=state.dumps)


@routes.get("/api/metrics")
async def metrics(request: web.Request) -> web.Response:
    auth.require(request, "jobs:ro")
    st = state.of(request)
    job_metrics = await st.pool.fetchrow(JOB_METRICS_SQL)
    all_jobs = await st.pool.fetchval(ALL_JOBS_SQL)
    trace_metrics = await st.pool.fetchrow(TRACE_METRICS_SQL)
    assert job_metrics is not None and trace_metrics is not None  # aggregates without GROUP BY: always one row
    seen = await laddr_agents.presence(st)
    active = sum(1 for record in seen.values() if laddr_agents.liveness(record)[0] == "active")
    return web.json_response(
        {
            "total_jobs": job_metrics["total_jobs"],
            "completed_jobs": job_metrics["completed_jobs"],
            "failed_jobs": job_metrics["failed_jobs"],
            "active_jobs": job_metrics["active_jobs"],
            "all_jobs": all_jobs,
            "avg_latency_ms": round(float(job_metrics["avg_latency_ms"])),
            "active_agents_count": active,
            "cache_hits": trace_metrics["cache_hits"],
            "tool_calls": trace_metrics["tool_calls"],
            "total_tokens": int(trace_metrics["total_tokens"]),
            "timestamp": envelope.rfc3339(envelope.now()),
        },
        dumps=state.dumps,
    )

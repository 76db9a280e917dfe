"""GET /stopwatch/{plugin}: how long a plugin's runs took, per pipeline step, in Ductile's shape
(stopwatch_handler.go handleStopwatch), from the attempts read model (job_logs).

    ?window=5m|1h|24h (default 1h)    ?include_subs=true: the plugin's own `ductile_stopwatch_subs`

Each step (`""` for direct calls) gets its sample count, nearest-rank p50/p95/p99 in rounded
milliseconds (`percentile_disc`) and `trend_p95_ms`: the p95 of six equal buckets of the window,
oldest first, 0 where a bucket has no run. Sub-timings (`{"name","dur_ns"}` items of the reply)
need the results scope as well; asked for without it they are left out and
`"subs_unavailable": "insufficient_scope"` says why.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aiohttp import web

from services.api import auth, state
from services.core import envelope, errors

routes = web.RouteTableDef()

WINDOWS = {"5m": timedelta(minutes=5), "1h": timedelta(hours=1), "24h": timedelta(hours=24)}
BUCKETS = 6

RUNS = """
WITH runs AS (
    SELECT coalesce(j.step_id, '') AS step, l.completed_at, l.result,
           date_part('epoch', l.completed_at - l.started_at) * 1000 AS ms
    FROM job_logs l LEFT JOIN jobs j ON j.job_id = l.job_id
    WHERE l.plugin = $1 AND l.completed_at >= $2 AND l.completed_at <= $3 AND l.started_at IS NOT NULL
)
"""
STEPS_SQL = (
    RUNS
    + """
SELECT step, count(*) AS n, percentile_disc(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY ms) AS pct
FROM runs GROUP BY step ORDER BY step
"""
)
TREND_SQL = (
    RUNS
    + """
SELECT step, least(width_bucket(date_part('epoch', completed_at), date_part('epoch', $2::timestamptz),
                                date_part('epoch', $3::timestamptz), $4), $4) AS bucket,
       percentile_disc(0.95) WITHIN GROUP (ORDER BY ms) AS p95
FROM runs GROUP BY step, bucket
"""
)
SUBS_SQL = (
    RUNS
    + """
SELECT step, sub->>'name' AS name, count(*) AS n,
       percentile_disc(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY (sub->>'dur_ns')::float8 / 1e6) AS pct
FROM runs, jsonb_array_elements(CASE WHEN jsonb_typeof(result->'ductile_stopwatch_subs') = 'array'
                                     THEN result->'ductile_stopwatch_subs' ELSE '[]'::jsonb END) AS sub
WHERE jsonb_typeof(sub->'dur_ns') = 'number' AND jsonb_typeof(sub->'name') = 'string'
GROUP BY step, name ORDER BY step, name
"""
)


def _ms(value: float | None) -> int:
    return round(value) if value is not None else 0


def _percentiles(pct: list[float] | None) -> dict[str, int]:
    p50, p95, p99 = pct or (None, None, None)
    return {"p50_ms": _ms(p50), "p95_ms": _ms(p95), "p99_ms": _ms(p99)}


@routes.get("/stopwatch/{plugin}")
async def stopwatch(request: web.Request) -> web.Response:
    principal = auth.require(request, "jobs:ro", "jobs:status:ro")
    plugin = request.match_info["plugin"]
    window = request.query.get("window") or "1h"
    if window not in WINDOWS:
        raise errors.BadRequest("invalid window (use 5m, 1h, or 24h)", parameter="window", allowed=list(WINDOWS))
    wants_subs = request.query.get("include_subs") == "true"
    may_see_subs = auth.sees_results(principal)  # who may see results may see the sub-timings inside them
    until = envelope.now()
    since = until - WINDOWS[window]
    st = state.of(request)
    async with st.pool.acquire() as conn:
        steps = await conn.fetch(STEPS_SQL, plugin, since, until)
        trend = await conn.fetch(TREND_SQL, plugin, since, until, BUCKETS) if steps else []
        subs = await conn.fetch(SUBS_SQL, plugin, since, until) if steps and wants_subs and may_see_subs else []
    trends: dict[str, list[int]] = {r["step"]: [0] * BUCKETS for r in steps}
    for r in trend:
        if r["step"] in trends and 1 <= r["bucket"] <= BUCKETS:
            trends[r["step"]][r["bucket"] - 1] = _ms(r["p95"])
    sub_rows: dict[str, list[dict[str, Any]]] = {}
    for r in subs:
        sub_rows.setdefault(r["step"], []).append(
            {"name": r["name"], "sample_count": int(r["n"]), **_percentiles(r["pct"])}
        )
    out_steps = []
    for r in steps:
        step: dict[str, Any] = {
            "step": r["step"],
            "sample_count": int(r["n"]),
            **_percentiles(r["pct"]),
            "trend_p95_ms": trends[r["step"]],
        }
        if wants_subs and may_see_subs:
            step["subs"] = sub_rows.get(r["step"], [])
        out_steps.append(step)
    body: dict[str, Any] = {
        "plugin": plugin,
        "window": window,
        "captured_at": envelope.rfc3339(until),
        "steps": out_steps,
    }
    if wants_subs and not may_see_subs:
        body["subs_unavailable"] = "insufficient_scope"
    return web.json_response(body, dumps=state.dumps)

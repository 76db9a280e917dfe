"""GET /analytics/summary from the counts the projector keeps (job_counts, attempt_counts) equals the
summary computed from the jobs and job_logs rows, after a mix of jobs (retries, dead letters, timeouts,
cancels, skips, jobs still queued or running, some created before the window and some in the hour the
window starts in), projected in batches of any size; and the counts (job_totals too) are what the rows say."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from services.api import analytics
from services.core import db, envelope
from services.projector import projection, summary_rows

#: the summary as it was computed before the counts existed: one scan of the window's rows
ROWS_SUMMARY_SQL = """
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
ROWS_ATTEMPT_STATS_SQL = """
SELECT status, count(*) AS n FROM job_logs
WHERE completed_at >= now() - make_interval(hours => $1)
GROUP BY status ORDER BY status
"""


async def rows_summary(conn: asyncpg.Connection, hours: int) -> dict[str, Any]:
    def row_stats(row: Any) -> dict[str, Any]:
        by_status = {status: int(row[status]) for status in analytics.STATUSES}
        p50, p95 = row["pct"] or (None, None)
        return analytics._stats(by_status, p50, p95, total=int(row["total"]))

    rows = await conn.fetch(ROWS_SUMMARY_SQL, hours)
    attempts = await conn.fetch(ROWS_ATTEMPT_STATS_SQL, hours)
    overall = next((r for r in rows if r["all_plugins"]), None)
    empty = analytics._stats(dict.fromkeys(analytics.STATUSES, 0), None, None, total=0)
    return {
        "stats": {r["status"]: int(r["n"]) for r in attempts},
        **(row_stats(overall) if overall is not None else empty),
        "plugins": {
            r["plugin"]: row_stats(r) for r in sorted(rows, key=lambda r: r["plugin"] or "") if not r["all_plugins"]
        },
    }


def job_events(rng: random.Random, job_id: str, created: datetime) -> list[envelope.Envelope]:
    """One job's events, from submission to a random fate, each some seconds after the one before."""
    at = [created]

    def event(kind: str, **data: Any) -> envelope.Envelope:
        at[0] += timedelta(seconds=rng.uniform(0.05, 90))
        return envelope.make(kind, source="test", job_id=job_id, data=data, time=at[0])

    plugin = rng.choice(("echo", "github", "slack"))
    out = [
        envelope.make(
            "job.queued",
            source="test",
            job_id=job_id,
            time=created,
            data={"plugin": plugin, "command": "poll", "payload": {}},
        )
    ]
    fate = rng.choice(
        (
            "ok",
            "ok",
            "retry_ok",
            "dead",
            "timed_out",
            "cancel_queued",
            "cancel_running",
            "skip",
            "queued",
            "running",
            "retry_pending",
        )
    )
    if fate == "queued":
        return out
    if fate == "skip":
        return [*out, event("job.skipped", reason="circuit open")]
    if fate == "cancel_queued":
        return [*out, event("job.cancelled", attempt=1, reason="by user", **{"while": "queued"})]
    out.append(event("job.started", attempt=1))
    if fate == "running":
        return out
    if fate == "ok":
        return [*out, event("job.succeeded", attempt=1, result={"status": "ok"})]
    if fate == "timed_out":
        return [*out, event("job.timed_out", attempt=1, error="deadline exceeded")]
    if fate == "cancel_running":
        return [*out, event("job.cancelled", attempt=1, reason="by user")]
    out += [event("job.failed", attempt=1, error="boom"), event("job.retry_scheduled", attempt=2)]
    if fate == "retry_pending":
        return out
    out.append(event("job.started", attempt=2))
    if fate == "retry_ok":
        return [*out, event("job.succeeded", attempt=2, result={"status": "ok"})]
    return [*out, event("job.failed", attempt=2, error="boom again"), event("job.dead", error="boom again")]


def event_log(rng: random.Random, now: datetime, jobs: int) -> list[tuple[int, envelope.Envelope]]:
    """The jobs' events in time order, as the stream holds them: created over the last 30 hours, none within
    five minutes of a window edge the test asks about (24 h, 5 h, 1 h ago), so that the one now() of each
    side cannot disagree on a row."""
    edges = [now - timedelta(hours=h) for h in (24, 5, 1)]
    events = []
    while len(events) < jobs:
        created = now - timedelta(seconds=rng.uniform(60, 30 * 3600))
        if any(abs(created - edge) < timedelta(minutes=5) for edge in edges):
            continue
        events.append(job_events(rng, envelope.new_id(), created))
    ordered = sorted((env for job in events for env in job), key=lambda env: env.time)
    return list(enumerate(ordered, start=1))


async def counts(conn: asyncpg.Connection) -> tuple[list[tuple[Any, ...]], ...]:
    jobs = await conn.fetch("SELECT hour, plugin, status, n FROM job_counts ORDER BY 1, 2, 3")
    attempts = await conn.fetch("SELECT hour, status, n FROM attempt_counts ORDER BY 1, 2")
    totals = await conn.fetch("SELECT plugin, command, status, n FROM job_totals ORDER BY 1, 2, 3")
    return [tuple(r) for r in jobs], [tuple(r) for r in attempts], [tuple(r) for r in totals]


async def test_summary_from_the_counts_equals_the_summary_of_the_rows(database_url: str) -> None:
    rng = random.Random(13)
    log = event_log(rng, envelope.now(), 160)
    conn = await asyncpg.connect(database_url, server_settings={"search_path": db.SCHEMA})
    try:
        await db._init_connection(conn)
        position = 0
        while position < len(log):  # batches of any size, as the live projector and rebuild cut them
            size = rng.choice((1, 2, 3, 7, 25))
            await projection.apply_batch(conn, log[position : position + size])
            position += size
        assert await conn.fetchval("SELECT count(*) FROM jobs") == 160
        assert await conn.fetchval("SELECT count(DISTINCT status) FROM jobs") >= 7
        assert await conn.fetchval("SELECT count(*) FROM job_logs WHERE attempt = 2") > 0

        for hours in (24, 5, 1, 48):
            from_counts = await analytics.summary_counts(conn, hours)
            from_rows = await rows_summary(conn, hours)
            assert from_counts == from_rows, hours
        assert (await analytics.summary_counts(conn, 24))["total"] < 160  # some jobs are older than the window

        # the counts are those of the rows as they are, however the batches fell
        kept = await counts(conn)
        async with conn.transaction():
            for statement in summary_rows.REFILL_SQL:
                await conn.execute(statement)
        assert await counts(conn) == kept
        assert kept[0] and kept[1]
        # job_totals (GET /metrics' headrace_jobs) are the rows by plugin, command and status, whatever their age
        by_status = await conn.fetch(
            "SELECT plugin, command, status, count(*) FROM jobs GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        )
        assert kept[2] == [tuple(r) for r in by_status] and sum(r[3] for r in kept[2]) == 160
    finally:
        await conn.close()

"""Read-model query benchmark: are GET /jobs, GET /job-logs and GET /analytics/summary fast
with a million jobs?

    python -m bench.jobs_queries --rows 1000000 [--repeat 50] [--keep]

Creates a fresh database `hr_bench_q_<rand>` next to DATABASE_URL (else
postgresql://postgres@127.0.0.1:5432/postgres), applies the real migrations, bulk-loads N
synthetic jobs and their attempt rows with COPY (20 plugins with skewed popularity, a
realistic status mix, error texts and stderr for the failures, 30 days of history in time order),
VACUUM ANALYZEs, then serves the real API app (`services.api.app.create_app`, a warm pool of
POOL_SIZE connections, a nats-server from the wheel for its bus) and sends each GET — every
/jobs and /job-logs filter, the full-text and Ductile substring `query` (`hreshold` finds
`threshold`), /analytics/summary — `--repeat` times over one keep-alive connection, printing
p50/p99 per request against the goal p50 <= 5 ms. The database is dropped afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
from aiohttp import web

from bench import infra
from services.api import app as app_mod
from services.core import bus as bus_mod
from services.core import config as config_mod
from services.core import db, embedded
from services.projector import read_models, summary_rows

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
GOAL_P50_MS = 5.0
CHUNK = 50_000
POOL_SIZE = 4
HISTORY_DAYS = 30

PLUGINS = (
    "echo",
    "withings",
    "github",
    "slack",
    "discord",
    "fabric",
    "rss",
    "weather",
    "email",
    "calendar",
    "notion",
    "jira",
    "s3_sync",
    "backup",
    "llm_summarize",
    "webhook_relay",
    "stripe",
    "twilio",
    "sentry",
    "pagerduty",
)
#: Zipf-like popularity: the first plugins run far more often than the last
PLUGIN_WEIGHTS = tuple(1 / (i + 1) ** 0.8 for i in range(len(PLUGINS)))
COMMANDS = (("poll", 0.6), ("handle", 0.3), ("health", 0.1))
STATUSES = (
    ("succeeded", 0.85),
    ("failed", 0.06),
    ("timed_out", 0.02),
    ("dead", 0.02),
    ("queued", 0.015),
    ("running", 0.01),
    ("skipped", 0.01),
    ("cancelled", 0.015),
)
SUBMITTERS = (("api", 0.7), ("schedule", 0.2), ("pipeline", 0.08), ("webhook", 0.02))
ERRORS = (
    "connection refused to api.{plugin}.example.com:443",
    "HTTP 429 Too Many Requests (retry after {n}s)",
    "HTTP 502 Bad Gateway from upstream {plugin}",
    "token expired for account acct_{n}",
    "KeyError: 'items' while parsing page {n}",
    "deadline exceeded after {n}s",
    "order {n} not found",
    "invalid JSON on stdout: Expecting value: line 1 column {n}",
    "plugin exited with code {n}",
    "TLS handshake timeout talking to {plugin}",
    "rate limit exhausted for workspace ws_{n}",
    "permission denied: scope files.read missing",
    "disk quota exceeded while writing chunk {n}",
    "upstream returned 404 for resource res_{n}",
    "ValueError: unsupported unit 'kg{n}'",
    "memory threshold exceeded on worker {n}",
)
STDERR = (
    "Traceback (most recent call last):\n  File \"run.py\", line {n}, in main\n    data = resp['items']\n"
    "KeyError: 'items'",
    "WARN retrying request {n}/3\nERROR giving up",
    "",
)


def _weighted(pairs: tuple[tuple[str, float], ...]) -> tuple[tuple[str, ...], tuple[float, ...]]:
    return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)


def generate(rows: int, seed: int = 7) -> Iterator[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
    """Chunks of (job records, attempt records) in the column order of JOB_COLS / LOG_COLS."""
    rng = random.Random(seed)
    start = datetime.now(UTC) - timedelta(days=HISTORY_DAYS)
    step_s = HISTORY_DAYS * 86400 / max(rows, 1)
    commands, command_w = _weighted(COMMANDS)
    statuses, status_w = _weighted(STATUSES)
    submitters, submitter_w = _weighted(SUBMITTERS)
    made = 0
    while made < rows:
        n = min(CHUNK, rows - made)
        plugins = rng.choices(PLUGINS, PLUGIN_WEIGHTS, k=n)
        cmds = rng.choices(commands, command_w, k=n)
        stats = rng.choices(statuses, status_w, k=n)
        subs = rng.choices(submitters, submitter_w, k=n)
        jobs: list[tuple[Any, ...]] = []
        logs: list[tuple[Any, ...]] = []
        for i in range(n):
            plugin, command, status = plugins[i], cmds[i], stats[i]
            job_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            # rows arrive in time order, as the projector writes them: the last day is the last 1/30th
            created = start + timedelta(seconds=(made + i) * step_s + rng.random() * 5)
            attempts = (
                4 if status == "dead" else (rng.choice((1, 1, 1, 2)) if status not in ("queued", "skipped") else 0)
            )
            started = created + timedelta(milliseconds=rng.expovariate(1 / 300)) if attempts else None
            duration = timedelta(milliseconds=rng.lognormvariate(6.0, 1.0))
            final = status not in ("queued", "running")
            completed = (started or created) + duration if final else None
            error = None
            if status in ("failed", "timed_out", "dead"):
                error = rng.choice(ERRORS).format(plugin=plugin, n=rng.randint(1, 999_999))
            elif status == "skipped":
                error = "skipped: circuit open"
            result = (
                {"status": "ok", "result": f"synced {rng.randint(0, 500)} items for {plugin}", "logs": []}
                if status == "succeeded"
                else None
            )
            jobs.append(
                (
                    job_id,
                    plugin,
                    command,
                    status,
                    subs[i],
                    {},
                    result,
                    error,
                    max(attempts, 1),
                    None,
                    job_id,
                    None,
                    None,
                    created,
                    started,
                    completed,
                    made + i + 1,
                )
            )
            for attempt in range(1, attempts + 1):
                if attempt == attempts:
                    a_status = (
                        status
                        if status != "dead"
                        else ("timed_out" if error and error.startswith("deadline") else "failed")
                    )
                    a_done = completed
                    a_error = error if a_status in ("failed", "timed_out") else None
                else:  # an earlier attempt that failed and was retried
                    a_status, a_done = "failed", (started or created) + duration * attempt
                    a_error = rng.choice(ERRORS).format(plugin=plugin, n=rng.randint(1, 999_999))
                stderr = rng.choice(STDERR).format(n=rng.randint(1, 400)) if a_error else None
                logs.append(
                    (
                        f"{job_id}-{attempt}",
                        job_id,
                        attempt,
                        plugin,
                        command,
                        a_status,
                        subs[i],
                        created,
                        started,
                        a_done,
                        a_error,
                        stderr or None,
                        result if a_status == "succeeded" else None,
                        [{"level": "info", "message": f"attempt {attempt}"}],
                        made + i + 1,
                    )
                )
        made += n
        yield jobs, logs


JOB_COLS = read_models.JOB_COLUMNS
LOG_COLS = (
    "log_id",
    "job_id",
    "attempt",
    "plugin",
    "command",
    "status",
    "submitted_by",
    "created_at",
    "started_at",
    "completed_at",
    "last_error",
    "stderr",
    "result",
    "logs",
    "last_seq",
)


async def _jsonb_codec(conn: asyncpg.Connection) -> None:
    """COPY speaks the binary format: jsonb is a version byte (1) and the JSON text."""
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: b"\x01" + orjson.dumps(v),
        decoder=lambda b: orjson.loads(b[1:]),
        schema="pg_catalog",
        format="binary",
    )


async def load(url: str, rows: int) -> tuple[int, int]:
    conn = await asyncpg.connect(url)
    try:
        await _jsonb_codec(conn)
        await db.migrate(conn)
        await conn.execute(f"SET search_path TO {db.SCHEMA}")
        await conn.execute("SET maintenance_work_mem = '512MB'")
        # load without the secondary indexes, then build exactly the ones the migrations made
        index_defs = await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename IN ('jobs', 'job_logs')"
            " AND indexname NOT IN (SELECT conname FROM pg_constraint)",
            db.SCHEMA,
        )
        for row in index_defs:
            await conn.execute(f'DROP INDEX "{row["indexname"]}"')
        n_jobs = n_logs = 0
        started = time.perf_counter()
        for jobs, logs in generate(rows):
            await conn.copy_records_to_table("jobs", records=jobs, columns=JOB_COLS, schema_name=db.SCHEMA)
            await conn.copy_records_to_table("job_logs", records=logs, columns=LOG_COLS, schema_name=db.SCHEMA)
            n_jobs += len(jobs)
            n_logs += len(logs)
            print(
                f"\r  loaded {n_jobs:>9,} jobs / {n_logs:>9,} attempts  ({time.perf_counter() - started:5.0f}s)",
                end="",
                file=sys.stderr,
                flush=True,
            )
        print(file=sys.stderr)
        for row in index_defs:
            await conn.execute(row["indexdef"])
        for statement in summary_rows.REFILL_SQL:  # what the projector would have counted row by row
            await conn.execute(statement)
        await conn.execute("VACUUM ANALYZE jobs")
        await conn.execute("VACUUM ANALYZE job_logs")
    finally:
        await conn.close()
    return n_jobs, n_logs


async def sample_values(pool: asyncpg.Pool) -> dict[str, Any]:
    """Real values to query for: a job id, a rare error word, a mid-popularity plugin."""
    async with pool.acquire() as conn:
        job_id = await conn.fetchval("SELECT job_id FROM job_logs WHERE attempt = 2 LIMIT 1")
        order = await conn.fetchval("SELECT last_error FROM job_logs WHERE last_error LIKE 'order %' LIMIT 1")
        newest = await conn.fetchval("SELECT max(completed_at) FROM job_logs")
    return {"job_id": job_id, "rare": (order or "order 1 not found").split()[1], "newest": newest}


#: (name, path and query string of one GET): every listing filter, the Ductile substring search, the summary
def requests(sample: dict[str, Any]) -> list[tuple[str, str]]:
    mid = PLUGINS[5]
    since = (sample["newest"] - timedelta(hours=6)).isoformat()
    until = sample["newest"].isoformat()
    window = urllib.parse.urlencode({"plugin": mid, "from": since, "to": until})
    return [
        ("jobs: unfiltered page", "/jobs"),
        ("jobs: plugin", f"/jobs?plugin={mid}"),
        ("jobs: plugin+command", f"/jobs?plugin={mid}&command=poll"),
        ("jobs: status=failed", "/jobs?status=failed"),
        ("jobs: status=succeeded", "/jobs?status=succeeded"),
        ("jobs: plugin+status", f"/jobs?plugin={mid}&status=failed"),
        ("jobs: plugin+command+status", f"/jobs?plugin={mid}&command=poll&status=failed"),
        ("jobs: command=health", "/jobs?command=health"),
        ("jobs: offset 1000", "/jobs?offset=1000"),
        ("job-logs: unfiltered page", "/job-logs"),
        ("job-logs: job_id", f"/job-logs?job_id={sample['job_id']}"),
        ("job-logs: plugin", f"/job-logs?plugin={mid}"),
        ("job-logs: status=failed", "/job-logs?status=failed"),
        ("job-logs: status=dead (join)", "/job-logs?status=dead"),
        ("job-logs: submitted_by=webhook", "/job-logs?submitted_by=webhook"),
        ("job-logs: plugin + 6h window", f"/job-logs?{window}"),
        ("job-logs: query rare word", f"/job-logs?query={sample['rare']}"),
        ("job-logs: query phrase", "/job-logs?" + urllib.parse.urlencode({"query": '"token expired"'})),
        ("job-logs: query common word", "/job-logs?query=KeyError"),
        ("job-logs: substring hreshold", "/job-logs?query=hreshold"),
        ("job-logs: substring + plugin", f"/job-logs?query=hreshold&plugin={mid}"),
        ("analytics: summary (24h)", "/analytics/summary"),
    ]


async def serve(tmp: Path, url: str) -> tuple[web.AppRunner, bus_mod.Bus, asyncpg.Pool, infra.Nats, str]:
    """The real API app (services.api.app.create_app) on a free port, over a warm pool of `url`."""
    nats = infra.Nats(tmp, "2m")
    nats_url = await nats.start()
    bus = await bus_mod.Bus.connect(nats_url, name="bench-jobs-queries")
    await bus.ensure_topology()
    port = embedded.free_port()
    config_path = infra.write_config(
        tmp / "config.yaml", api_port=port, log_level="warning", echo_parallelism=1, py_parallelism=1
    )
    config = config_mod.load(config_path, env={"NATS_URL": nats_url, "DATABASE_URL": url})
    pool = await db.create_pool(url, min_size=POOL_SIZE, max_size=POOL_SIZE)
    runner = web.AppRunner(app_mod.create_app(config, bus=bus, pool=pool), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, bus, pool, nats, f"http://127.0.0.1:{port}"


async def time_requests(base: str, sample: dict[str, Any], repeat: int) -> list[tuple[str, float, float, str]]:
    out = []
    headers = {"Authorization": f"Bearer {infra.TOKEN}"}
    async with aiohttp.ClientSession(base, headers=headers) as session:
        for name, path in requests(sample):
            for _ in range(3):  # warm the connection, the plans and the cache
                async with session.get(path) as resp:
                    body = await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"GET {path}: {resp.status} {body[:300]!r}")
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                async with session.get(path) as resp:
                    body = await resp.read()
                times.append((time.perf_counter() - t0) * 1000)
            times.sort()
            doc = orjson.loads(body)
            total = ""
            if "total" in doc and "total_is_estimate" in doc:
                total = f"{doc['total']:,}{'~' if doc['total_is_estimate'] else ''}"
            out.append(
                (name, statistics.median(times), times[min(len(times) - 1, round(0.99 * (len(times) - 1)))], total)
            )
    return out


def render(results: list[tuple[str, float, float, str]]) -> str:
    lines = [f"{'GET':<32} {'p50 ms':>8} {'p99 ms':>8}  {'total':>10}  goal p50<={GOAL_P50_MS:g}ms", "-" * 76]
    for name, p50, p99, total in results:
        lines.append(f"{name:<32} {p50:>8.2f} {p99:>8.2f}  {total:>10}  {'ok' if p50 <= GOAL_P50_MS else 'MISS'}")
    lines.append("(total: '~' = estimate, exact up to listing.COUNT_CAP)")
    return "\n".join(lines)


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


async def amain(args: argparse.Namespace) -> int:
    admin_url = os.environ.get("DATABASE_URL") or DEFAULT_URL
    name = args.reuse or f"hr_bench_q_{uuid.uuid4().hex[:8]}"
    url = _with_database(admin_url, name)
    if not args.reuse:
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
    try:
        if args.reuse:
            pool = await db.create_pool(url, max_size=1)
            n_jobs = await pool.fetchval("SELECT count(*) FROM jobs")
            n_logs = await pool.fetchval("SELECT count(*) FROM job_logs")
            await pool.close()
        else:
            print(f"database {name}: loading {args.rows:,} jobs", file=sys.stderr)
            t0 = time.perf_counter()
            n_jobs, n_logs = await load(url, args.rows)
            print(
                f"loaded {n_jobs:,} jobs and {n_logs:,} attempt rows in {time.perf_counter() - t0:.0f}s "
                "(COPY, index builds, VACUUM ANALYZE)",
                file=sys.stderr,
            )
        tmp = Path(tempfile.mkdtemp(prefix="hr-bench-q-"))
        runner, bus, pool, nats, base = await serve(tmp, url)
        try:
            sample = await sample_values(pool)
            results = await time_requests(base, sample, args.repeat)
        finally:
            await runner.cleanup()
            await pool.close()
            await bus.close()
            await nats.stop()
            shutil.rmtree(tmp, ignore_errors=True)
        print(
            f"\n{n_jobs:,} jobs, {n_logs:,} attempts; {args.repeat} GETs each over HTTP (keep-alive, "
            f"warm pool of {POOL_SIZE})"
        )
        print(render(results))
        misses = [r for r in results if r[1] > GOAL_P50_MS]
        return 1 if misses and args.strict else 0
    finally:
        if not args.keep and not args.reuse:
            admin = await asyncpg.connect(admin_url)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await admin.close()
        else:
            print(f"kept database {name}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.jobs_queries", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="synthetic jobs to load (default 1000000)")
    parser.add_argument("--repeat", type=int, default=50, help="runs per query (default 50)")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--reuse", metavar="DATABASE", help="time the queries on a database kept by --keep")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a query misses the p50 goal")
    return asyncio.run(amain(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())

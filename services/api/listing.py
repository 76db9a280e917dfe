"""GET /jobs and GET /job-logs: filtered, newest-first pages of the read models.

Both answer `{"<rows>": [...], "total": n, "total_is_estimate": bool}`. Counting every
matching row of a million-row table on each page view would cost more than the page
itself, so `total` is exact up to `COUNT_CAP` matches and a planner estimate beyond it
(flagged by `total_is_estimate`); an unfiltered listing of a table the statistics already
know to be big skips the count altogether.

A `query` matches as websearch full text over last_error, stderr and result, or as a plain
case-insensitive substring of them (Ductile's semantics, trigram-indexed). It orders by
`ts_rank`, then recency, among the `RANK_WINDOW` most recent matches (reported as
`rank_window`): ranking every match of a common word would read every matching row.

Every filter is a fixed SQL clause with a bind parameter; nothing the caller sends is ever
formatted into SQL. Indexes for each filter combination: migrations/002_listing_indexes.sql.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from services.api import auth, bodies, state, views
from services.core import values

routes = web.RouteTableDef()

STATUSES = ("queued", "running", "succeeded", "failed", "timed_out", "dead", "skipped", "cancelled")
STATUS_ALIASES = {"pending": "queued", "ok": "succeeded", "error": "failed"}
DEFAULT_LIMIT = 50
#: Ductile refuses a `limit` above 200 on both listings (handlers.go handleListJobs); so do we
JOBS_MAX_LIMIT = 200
LOGS_MAX_LIMIT = 200
#: deeper pages cost a scan of everything before them: page by time bounds instead
MAX_OFFSET = bodies.MAX_OFFSET
#: `total` is exact up to this many matching rows, an estimate beyond
COUNT_CAP = 1000
#: a full-text query ranks at most this many of the most recent matches (or offset + limit, if more)
RANK_WINDOW = 1000

JOBS_PAGE_SQL = """
SELECT job_id, plugin, command, status, attempt, created_at, started_at, completed_at
FROM jobs {where}
ORDER BY created_at DESC, job_id DESC
LIMIT ${limit} OFFSET ${offset}
"""

LOG_COLUMNS = ("job_id, log_id, plugin, command, status, attempt, submitted_by, created_at, completed_at, "
               "last_error, stderr, logs")
LOGS_PAGE_SQL = """
SELECT {columns}
FROM job_logs {where}
ORDER BY completed_at DESC NULLS LAST, log_id DESC
LIMIT ${limit} OFFSET ${offset}
"""
#: with a full-text query: rank (ts_rank, then recency) the RANK_WINDOW most recent matches. The scan reads
#: one match more than the window and `matched` says how many it found, which is the exact count whenever
#: it is at most COUNT_CAP (<= the window): the matches are read once, not again by a count.
LOGS_RANKED_SQL = """
SELECT {columns}, matched
FROM (
    SELECT *, count(*) OVER () AS matched,
           row_number() OVER (ORDER BY completed_at DESC NULLS LAST, log_id DESC) AS recency
    FROM (
        SELECT {columns}, search FROM job_logs {where}
        ORDER BY completed_at DESC NULLS LAST, log_id DESC
        LIMIT ${window} + 1
    ) AS scanned
) AS recent
WHERE recency <= ${window}
ORDER BY ts_rank(search, websearch_to_tsquery('simple', ${query})) DESC, completed_at DESC NULLS LAST, log_id DESC
LIMIT ${limit} OFFSET ${offset}
"""
#: attempts of dead jobs: an attempt row never says "dead" itself (its own outcome was failed or timed_out)
LOGS_OF_DEAD_JOBS = "EXISTS (SELECT 1 FROM jobs j WHERE j.job_id = job_logs.job_id AND j.status = 'dead')"

CAPPED_COUNT_SQL = "SELECT count(*) FROM (SELECT 1 FROM {table} {where} LIMIT ${cap}) AS capped"
ESTIMATE_SQL = "EXPLAIN (FORMAT JSON) SELECT 1 FROM {table} {where}"
#: the planner's own row estimate of a whole table: reltuples scaled to the current size on disk
TABLE_ESTIMATE_SQL = """
SELECT CASE WHEN c.reltuples > 0 AND c.relpages > 0
            THEN c.reltuples / c.relpages * (pg_relation_size(c.oid) / current_setting('block_size')::int)
            ELSE c.reltuples END::bigint
FROM pg_class c WHERE c.oid = $1::regclass
"""
TABLES = frozenset({"jobs", "job_logs"})
#: the text the trigram index of migrations/007_job_logs_substring.sql covers (the same expression, or
#: the planner cannot use it)
SUBSTRING_TEXT = ("left(coalesce(last_error, '') || ' ' || coalesce(stderr, '') || ' ' || "
                  "coalesce(result::text, ''), 100000)")
_LIKE_SPECIAL = re.compile(r"[\\%_]")


@dataclasses.dataclass(slots=True)
class Filters:
    """WHERE clauses over fixed columns, each with its value as a numbered bind parameter."""

    clauses: list[str] = dataclasses.field(default_factory=list)
    args: list[Any] = dataclasses.field(default_factory=list)

    def param(self, value: Any) -> int:
        """Bind `value`; returns its parameter number."""
        self.args.append(value)
        return len(self.args)

    def equal(self, column: str, value: Any) -> None:
        if value is not None:
            self.clauses.append(f"{column} = ${self.param(value)}")

    def compare(self, column: str, op: str, value: Any) -> None:
        if value is not None:
            self.clauses.append(f"{column} {op} ${self.param(value)}")

    def text_search(self, query: str) -> int:
        """Match a web-search-style query against job_logs.search, or the query as a plain
        case-insensitive substring (Ductile's semantics) of the same text; returns the full-text
        query's parameter number. The query gets the read models' substitution, so it finds the text
        as the rows hold it."""
        text = values.storable_text(query)
        n = self.param(text)
        like = self.param("%" + _LIKE_SPECIAL.sub(r"\\\g<0>", text) + "%")
        self.clauses.append(f"(search @@ websearch_to_tsquery('simple', ${n}) OR {SUBSTRING_TEXT} ILIKE ${like})")
        return n

    def attempt_status(self, status: str | None) -> None:
        """The attempt's status; `dead` means the attempts of jobs that ended dead."""
        if status == "dead":
            self.clauses.append(LOGS_OF_DEAD_JOBS)
        else:
            self.equal("status", status)

    @property
    def where(self) -> str:
        return "WHERE " + " AND ".join(self.clauses) if self.clauses else ""


async def count(conn: asyncpg.Connection, table: str, filters: Filters) -> tuple[int, bool]:
    """(total, is_estimate) of the rows of `table` matching `filters`."""
    assert table in TABLES
    if not filters.clauses:
        whole = await conn.fetchval(TABLE_ESTIMATE_SQL, table)
        if whole is not None and whole > COUNT_CAP:
            return int(whole), True
    args = [*filters.args, COUNT_CAP + 1]
    exact = await conn.fetchval(CAPPED_COUNT_SQL.format(table=table, where=filters.where, cap=len(args)), *args)
    if exact <= COUNT_CAP:
        return int(exact), False
    return await planned_count(conn, table, filters), True


async def planned_count(conn: asyncpg.Connection, table: str, filters: Filters) -> int:
    """The planner's estimate of the rows matching `filters`, known to be more than COUNT_CAP."""
    assert table in TABLES
    plan = await conn.fetchval(ESTIMATE_SQL.format(table=table, where=filters.where), *filters.args)
    if isinstance(plan, str):
        plan = orjson.loads(plan)
    planned = int(plan[0]["Plan"]["Plan Rows"])
    return max(planned, COUNT_CAP + 1)


def status_param(request: web.Request) -> str | None:
    """The status filter, trimmed and lower-cased first as Ductile's parseJobStatusFilter does (`FAILED` works)."""
    return bodies.choice_param(request, "status", STATUSES, STATUS_ALIASES, fold_case=True)


def jobs_query(request: web.Request) -> tuple[Filters, int, int]:
    """Filters, limit and offset of a GET /jobs (400 naming a bad parameter)."""
    status = status_param(request)
    limit, offset = bodies.page(request, default_limit=DEFAULT_LIMIT, max_limit=JOBS_MAX_LIMIT)
    filters = Filters()
    filters.equal("plugin", request.query.get("plugin") or None)
    filters.equal("command", request.query.get("command") or None)
    filters.equal("status", status)
    return filters, limit, offset


async def jobs_page(conn: asyncpg.Connection, filters: Filters, limit: int,
                    offset: int = 0) -> tuple[list[asyncpg.Record], int, bool]:
    """(rows, total, total_is_estimate) of one page of jobs."""
    total, estimated = await count(conn, "jobs", filters)
    page = Filters(list(filters.clauses), list(filters.args))
    sql = JOBS_PAGE_SQL.format(where=page.where, limit=page.param(limit), offset=page.param(offset))
    return await conn.fetch(sql, *page.args), total, estimated


@routes.get("/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    auth.require(request, "jobs:ro", narrow=("jobs:status:ro",))
    filters, limit, offset = jobs_query(request)
    st = state.of(request)
    async with st.pool.acquire() as conn:
        rows, total, estimated = await jobs_page(conn, filters, limit, offset)
    return web.json_response(
        {"jobs": [views.job_summary(dict(r)) for r in rows], "total": total, "total_is_estimate": estimated},
        dumps=state.dumps,
    )


def logs_query(request: web.Request) -> tuple[Filters, int | None, int, int, bool]:
    """Filters, the full-text query's parameter number, limit, offset and include_result of a GET /job-logs."""
    status = status_param(request)
    since = bodies.time_param(request, "from")
    until = bodies.time_param(request, "to")
    limit, offset = bodies.page(request, default_limit=DEFAULT_LIMIT, max_limit=LOGS_MAX_LIMIT)
    include_result = bodies.bool_param(request, "include_result")
    query = (request.query.get("query") or "").strip() or None
    filters = Filters()
    for column in ("job_id", "plugin", "command", "submitted_by"):
        filters.equal(column, request.query.get(column) or None)
    filters.attempt_status(status)
    filters.compare("completed_at", ">=", since)
    filters.compare("completed_at", "<=", until)
    query_param = filters.text_search(query) if query is not None else None
    return filters, query_param, limit, offset, include_result


async def job_logs_page(conn: asyncpg.Connection, filters: Filters, limit: int, offset: int = 0, *,
                        query_param: int | None = None,
                        include_result: bool = False) -> tuple[list[asyncpg.Record], int, bool]:
    """(rows, total, total_is_estimate) of one page of attempts; ranked when `query_param` names the
    bound full-text query."""
    page = Filters(list(filters.clauses), list(filters.args))
    columns = LOG_COLUMNS + (", result" if include_result else "")
    if query_param is None:
        total, estimated = await count(conn, "job_logs", filters)
        sql = LOGS_PAGE_SQL.format(columns=columns, where=page.where, limit=page.param(limit),
                                   offset=page.param(offset))
        return await conn.fetch(sql, *page.args), total, estimated
    sql = LOGS_RANKED_SQL.format(columns=columns, where=page.where, query=query_param,
                                 window=page.param(rank_window(limit, offset)),
                                 limit=page.param(limit), offset=page.param(offset))
    rows = await conn.fetch(sql, *page.args)
    if not rows:  # a page past the matches says nothing of how many there are
        total, estimated = await count(conn, "job_logs", filters)
    elif (matched := int(rows[0]["matched"])) <= COUNT_CAP:
        total, estimated = matched, False
    else:
        total, estimated = await planned_count(conn, "job_logs", filters), True
    return rows, total, estimated


def rank_window(limit: int, offset: int) -> int:
    return max(RANK_WINDOW, limit + offset)


@routes.get("/job-logs")
async def list_job_logs(request: web.Request) -> web.Response:
    principal = auth.require(request, "jobs:ro", narrow=("jobs:logs:ro",))
    filters, query_param, limit, offset, include_result = logs_query(request)
    st = state.of(request)
    async with st.pool.acquire() as conn:
        rows, total, estimated = await job_logs_page(conn, filters, limit, offset, query_param=query_param,
                                                     include_result=include_result)
    body: dict[str, Any] = {"logs": [auth.results_for(principal, views.job_log(dict(r), include_result=include_result))
                                     for r in rows],
                            "total": total, "total_is_estimate": estimated}
    if query_param is not None:
        body["rank_window"] = rank_window(limit, offset)
    return web.json_response(body, dumps=state.dumps)

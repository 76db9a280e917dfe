"""GET /jobs and GET /job-logs: filtered, newest-first pages of the read models.

Both answer `{"<rows>": [...], "total": n, "total_is_estimate": bool}`. Counting every
matching row of a million-row table on each page view would cost more than the page
itself, so `total` is exact up to `COUNT_CAP` matches and a planner estimate beyond it
(flagged by `total_is_estimate`); an unfiltered listing of a table the statistics already
know to be big skips the count altogether.

A `query` matches as websearch full text over last_error, stderr and result, or as a plain
case-insensitive substring of them (Ductile's semantics, trigram-indexed). It orders by
`ts_rank`, then recency, among the `RANK_WINDOW` most recent matches (reported as
`rank_window`): ranking every match of a common word would read every matching row. Those
matches are looked for in the last hours first (the search indexes are keyed by completion
hour too, migrations/011): the bound widens, as far as the matches found so far suggest,
until it holds a full window or there is no bound left.

Every filter is a fixed SQL clause with a bind parameter; nothing the caller sends is ever
formatted into SQL. Indexes for each filter combination: migrations/002_listing_indexes.sql.
"""

from __future__ import annotations

import dataclasses
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from services.api import auth, bodies, state, views
from services.core import db, values

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
#: the hour a row completed in, as migrations/011 keys the search indexes by it (the very expression)
COMPLETED_HOUR = "date_trunc('hour', completed_at AT TIME ZONE 'UTC')"
#: hours back the first look for a query's matches reaches; each further look reaches at least
#: SEARCH_GROWTH times as far, and at most SEARCH_LOOKS looks are bounded (the last one is not)
SEARCH_FIRST_HOURS = 6
SEARCH_GROWTH = 4
SEARCH_LOOKS = 3
#: drop the bound when the matches found so far, scaled to the whole history, are at most this many windows
SEARCH_READ_ALL = 3
#: a bound reaches this much further back than the rate of matches says a full window needs
SEARCH_MARGIN = 1.3
OLDEST_COMPLETED_SQL = "SELECT min(completed_at) FROM job_logs"

JOBS_PAGE_SQL = """
SELECT job_id, plugin, command, status, attempt, created_at, started_at, completed_at
FROM jobs {where}
ORDER BY created_at DESC, job_id DESC
LIMIT ${limit} OFFSET ${offset}
"""

LOG_COLUMNS = (
    "job_id, log_id, plugin, command, status, attempt, submitted_by, created_at, completed_at, last_error, stderr, logs"
)
LOGS_PAGE_SQL = """
SELECT {columns}
FROM job_logs {where}
ORDER BY completed_at DESC NULLS LAST, log_id DESC
LIMIT ${limit} OFFSET ${offset}
"""
#: with a full-text query: rank (ts_rank, then recency) the RANK_WINDOW most recent matches. The scan reads
#: one match more than the window and `matched` says how many it found, which is the exact count whenever
#: it is at most COUNT_CAP (<= the window): the matches are read once, not again by a count. The window
#: carries only what ranks it; the page's rows are read by key afterwards.
LOGS_RANKED_SQL = """
SELECT {page_columns}, page.matched
FROM (
    SELECT log_id, matched, done, ts_rank(search, websearch_to_tsquery('simple', ${query})) AS rank
    FROM (
        SELECT *, count(*) OVER () AS matched, row_number() OVER (ORDER BY done DESC NULLS LAST, log_id DESC) AS recency
        FROM (
            SELECT log_id, completed_at AS done, search FROM job_logs {where}
            ORDER BY completed_at DESC NULLS LAST, log_id DESC
            LIMIT ${window} + 1
        ) AS scanned
    ) AS recent
    WHERE recency <= ${window}
    ORDER BY rank DESC, done DESC NULLS LAST, log_id DESC
    LIMIT ${limit} OFFSET ${offset}
) AS page JOIN job_logs j USING (log_id)
ORDER BY page.rank DESC, page.done DESC NULLS LAST, log_id DESC
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
#: Ductile's substring match: `search_text` is the lower-cased text full text covers, so this is
#: `text ILIKE pattern` (which lower-cases both sides); migrations/011 indexes it by trigrams
SUBSTRING_MATCH = "search_text LIKE lower(${})"
_LIKE_SPECIAL = re.compile(r"[\\%_]")
#: a query websearch_to_tsquery makes one lexeme of, a substring of every text it matches
_PLAIN_WORD = re.compile(r"[A-Za-z0-9]+")


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

    def text_search(self, query: str) -> str:
        """Match a web-search-style query against job_logs.search, or the query as a plain
        case-insensitive substring (Ductile's semantics) of the same text; returns the query as
        matched (for ts_rank). The query gets the read models' substitution, so it finds the text
        as the rows hold it."""
        text = values.storable_text(query)
        like = self.param("%" + _LIKE_SPECIAL.sub(r"\\\g<0>", text) + "%")
        substring = SUBSTRING_MATCH.format(like)
        if _PLAIN_WORD.fullmatch(text):
            # the one lexeme such a query makes is a token of the text, lower-cased as ILIKE lower-cases
            # it: whatever the full text matches, the substring matches too, so one index does
            self.clauses.append(substring)
        else:
            self.clauses.append(f"(search @@ websearch_to_tsquery('simple', ${self.param(text)}) OR {substring})")
        return text

    def attempt_status(self, status: str | None) -> None:
        """The attempt's status; `dead` means the attempts of jobs that ended dead."""
        if status == "dead":
            self.clauses.append(LOGS_OF_DEAD_JOBS)
        else:
            self.equal("status", status)

    @property
    def where(self) -> str:
        return "WHERE " + " AND ".join(self.clauses) if self.clauses else ""


async def count(conn: db.Conn, table: str, filters: Filters) -> tuple[int, bool]:
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


async def planned_count(conn: db.Conn, table: str, filters: Filters) -> int:
    """The planner's estimate of the rows matching `filters`, known to be more than COUNT_CAP."""
    return max(await planned_rows(conn, table, filters), COUNT_CAP + 1)


async def planned_rows(conn: db.Conn, table: str, filters: Filters) -> int:
    """The planner's estimate of the rows matching `filters`."""
    assert table in TABLES
    plan = await conn.fetchval(ESTIMATE_SQL.format(table=table, where=filters.where), *filters.args)
    if isinstance(plan, str):
        plan = orjson.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


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


async def jobs_page(
    conn: db.Conn, filters: Filters, limit: int, offset: int = 0
) -> tuple[list[asyncpg.Record], int, bool]:
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


def logs_query(request: web.Request) -> tuple[Filters, str | None, int, int, bool]:
    """Filters, the full-text query (as matched), limit, offset and include_result of a GET /job-logs."""
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
    ranked = filters.text_search(query) if query is not None else None
    return filters, ranked, limit, offset, include_result


async def job_logs_page(
    conn: db.Conn,
    filters: Filters,
    limit: int,
    offset: int = 0,
    *,
    query: str | None = None,
    include_result: bool = False,
) -> tuple[list[asyncpg.Record], int, bool]:
    """(rows, total, total_is_estimate) of one page of attempts; ranked by `query` (what
    Filters.text_search returned) when there is one."""
    columns = LOG_COLUMNS + (", result" if include_result else "")
    if query is None:
        page = Filters(list(filters.clauses), list(filters.args))
        total, estimated = await count(conn, "job_logs", filters)
        sql = LOGS_PAGE_SQL.format(
            columns=columns, where=page.where, limit=page.param(limit), offset=page.param(offset)
        )
        return await conn.fetch(sql, *page.args), total, estimated
    planned = await planned_rows(conn, "job_logs", filters)
    rows = await _ranked_window(conn, filters, columns, query, rank_window(limit, offset), limit, offset, planned)
    if not rows:  # a page past the matches says nothing of how many there are
        total, estimated = await count(conn, "job_logs", filters)
    elif (matched := int(rows[0]["matched"])) <= COUNT_CAP:
        total, estimated = matched, False
    else:
        total, estimated = max(planned, COUNT_CAP + 1), True
    return rows, total, estimated


async def _ranked_window(
    conn: db.Conn,
    filters: Filters,
    columns: str,
    query: str,
    window: int,
    limit: int,
    offset: int,
    planned: int,
) -> list[asyncpg.Record]:
    """The page of the ranked window. The `window` most recent matches are looked for among the rows
    completed since a bound, first as far back as the planner's estimate of the matches suggests (for a
    plain word, whose substring estimate holds; else SEARCH_FIRST_HOURS), then, while that holds no more
    than `window` of them, as far as the rate of matches found suggests. The bound is dropped when all the
    matches look few enough to read (the bound's own cost grows with the rows it spans). Correct with
    any bound: a match left out completed before it (or not yet), so it is older than every match kept,
    and the kept ones are a full window."""
    anchor = datetime.now(UTC).replace(tzinfo=None, minute=0, second=0, microsecond=0) + timedelta(hours=1)
    oldest = await conn.fetchval(OLDEST_COMPLETED_SQL)
    history = (anchor - oldest.astimezone(UTC).replace(tzinfo=None)) / timedelta(hours=1) if oldest else 0.0
    hours: float = SEARCH_FIRST_HOURS
    if _PLAIN_WORD.fullmatch(query):
        if planned <= SEARCH_READ_ALL * window:
            hours = math.inf
        else:
            hours = max(hours, math.ceil(history * (window + 1) / planned * SEARCH_MARGIN))
    for _ in range(SEARCH_LOOKS):
        if hours >= history:
            break
        bounded = Filters(list(filters.clauses), list(filters.args))
        bounded.compare(COMPLETED_HOUR, ">=", anchor - timedelta(hours=hours))
        rows = await conn.fetch(_ranked_sql(bounded, columns, query, window, limit, offset), *bounded.args)
        found = int(rows[0]["matched"]) if rows else 0
        if found > window:
            return rows
        if found * history / hours <= SEARCH_READ_ALL * window:
            break
        hours = math.ceil(hours * max(SEARCH_GROWTH, (window + 1) / max(found, 1) * SEARCH_MARGIN))
    unbounded = Filters(list(filters.clauses), list(filters.args))
    return await conn.fetch(_ranked_sql(unbounded, columns, query, window, limit, offset), *unbounded.args)


def _ranked_sql(filters: Filters, columns: str, query: str, window: int, limit: int, offset: int) -> str:
    """LOGS_RANKED_SQL over `filters` (whose args get the query, window, limit and offset appended)."""
    return LOGS_RANKED_SQL.format(
        page_columns=columns,
        where=filters.where,
        query=filters.param(query),
        window=filters.param(window),
        limit=filters.param(limit),
        offset=filters.param(offset),
    )


def rank_window(limit: int, offset: int) -> int:
    return max(RANK_WINDOW, limit + offset)


@routes.get("/job-logs")
async def list_job_logs(request: web.Request) -> web.Response:
    principal = auth.require(request, "jobs:ro", narrow=("jobs:logs:ro",))
    filters, query, limit, offset, include_result = logs_query(request)
    st = state.of(request)
    async with st.pool.acquire() as conn:
        rows, total, estimated = await job_logs_page(
            conn, filters, limit, offset, query=query, include_result=include_result
        )
    body: dict[str, Any] = {
        "logs": [auth.results_for(principal, views.job_log(dict(r), include_result=include_result)) for r in rows],
        "total": total,
        "total_is_estimate": estimated,
    }
    if query is not None:
        body["rank_window"] = rank_window(limit, offset)
    return web.json_response(body, dumps=state.dumps)

"""The counts GET /analytics/summary adds up: jobs by (hour created, plugin, status) in `job_counts` and
attempts by (hour completed, status) in `attempt_counts` (migrations/012), and the jobs by (plugin, command,
status) GET /metrics reports, in `job_totals` (migrations/013); kept by the projector in the transaction that
writes the rows they count.

A batch changes them by the difference between the rows it loaded and the rows it writes: each row that
changed leaves its old key and joins its new one. A key whose count comes to zero is deleted, so the
tables depend only on the rows, not on where batches began, and `headrace rebuild` makes the same ones.
Hours are UTC, as `date_trunc('hour', t, 'UTC')` gives them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from services.core import db

Row = Mapping[str, Any]

JOB_COUNTS_SQL = """
INSERT INTO job_counts (hour, plugin, status, n)
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::bigint[])
ON CONFLICT (hour, plugin, status) DO UPDATE SET n = job_counts.n + EXCLUDED.n
"""
JOB_COUNTS_PRUNE_SQL = """
DELETE FROM job_counts c USING unnest($1::timestamptz[], $2::text[], $3::text[]) AS k(hour, plugin, status)
WHERE c.hour = k.hour AND c.plugin = k.plugin AND c.status = k.status AND c.n = 0
"""
ATTEMPT_COUNTS_SQL = """
INSERT INTO attempt_counts (hour, status, n)
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::bigint[])
ON CONFLICT (hour, status) DO UPDATE SET n = attempt_counts.n + EXCLUDED.n
"""
ATTEMPT_COUNTS_PRUNE_SQL = """
DELETE FROM attempt_counts c USING unnest($1::timestamptz[], $2::text[]) AS k(hour, status)
WHERE c.hour = k.hour AND c.status = k.status AND c.n = 0
"""
JOB_TOTALS_SQL = """
INSERT INTO job_totals (plugin, command, status, n)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])
ON CONFLICT (plugin, command, status) DO UPDATE SET n = job_totals.n + EXCLUDED.n
"""
JOB_TOTALS_PRUNE_SQL = """
DELETE FROM job_totals t USING unnest($1::text[], $2::text[], $3::text[]) AS k(plugin, command, status)
WHERE t.plugin = k.plugin AND t.command = k.command AND t.status = k.status AND t.n = 0
"""
#: the counts of the rows as they are (migrations/012 and 013 run the same; the benchmark after its bulk load)
REFILL_SQL = (
    "DELETE FROM job_counts",
    "INSERT INTO job_counts (hour, plugin, status, n) SELECT date_trunc('hour', created_at, 'UTC'), plugin, status,"
    " count(*) FROM jobs GROUP BY 1, 2, 3",
    "DELETE FROM attempt_counts",
    "INSERT INTO attempt_counts (hour, status, n) SELECT date_trunc('hour', completed_at, 'UTC'), status, count(*)"
    " FROM job_logs WHERE completed_at IS NOT NULL GROUP BY 1, 2",
    "DELETE FROM job_totals",
    "INSERT INTO job_totals (plugin, command, status, n) SELECT plugin, command, status, count(*) FROM jobs"
    " GROUP BY 1, 2, 3",
)


def hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def job_key(row: Row | None) -> tuple[datetime, str, str] | None:
    return None if row is None else (hour(row["created_at"]), row["plugin"], row["status"])


def total_key(row: Row | None) -> tuple[str, str, str] | None:
    return None if row is None else (row["plugin"], row["command"], row["status"])


def attempt_key(row: Row | None) -> tuple[datetime, str] | None:
    if row is None or row["completed_at"] is None:
        return None
    return hour(row["completed_at"]), row["status"]


def deltas(changes: Iterable[tuple[Any, Any]]) -> Counter[Any]:
    """(old key, new key) pairs (None: no row, or a row not counted) → the change of each key's count."""
    out: Counter[Any] = Counter()
    for old, new in changes:
        if old == new:
            continue
        if old is not None:
            out[old] -= 1
        if new is not None:
            out[new] += 1
    return Counter({key: n for key, n in out.items() if n})


async def apply(conn: db.Conn, jobs: Counter[Any], attempts: Counter[Any], totals: Counter[Any]) -> None:
    """Add the count changes of a batch (`deltas` of job_key / attempt_key / total_key pairs) to the tables."""
    for changes, add, prune in (
        (jobs, JOB_COUNTS_SQL, JOB_COUNTS_PRUNE_SQL),
        (attempts, ATTEMPT_COUNTS_SQL, ATTEMPT_COUNTS_PRUNE_SQL),
        (totals, JOB_TOTALS_SQL, JOB_TOTALS_PRUNE_SQL),
    ):
        if changes:
            keys = sorted(changes)
            columns = [list(c) for c in zip(*keys, strict=True)]
            await conn.execute(add, *columns, [changes[k] for k in keys])
            await conn.execute(prune, *columns)

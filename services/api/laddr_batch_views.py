"""Reading Laddr batches (services/api/laddr_batches.py): a batch and its members from the read model
(or folded from the event log while the projection lags), the member jobs' rows, and the Laddr shapes
built from them: a task's `response`, the batch's `outputs` and its summary row.
"""

from __future__ import annotations

import asyncio
from typing import Any

from services.api import laddr_common, state, views
from services.api.jobs import fresh_job
from services.core import batches, subjects

#: member jobs the projection has not shown final are folded from the log, up to this many per request
FRESH_MAX = 32

BATCH_SQL = f"SELECT {', '.join(batches.BATCH_COLUMNS)} FROM batches WHERE batch_id = $1"
MEMBERS_SQL = f"""
SELECT {", ".join(batches.MEMBER_COLUMNS)} FROM batch_members WHERE batch_id = ANY($1::text[])
ORDER BY batch_id, batch_index
"""
JOBS_SQL = """
SELECT job_id, plugin, command, status, result, last_error, started_at, completed_at, last_seq
FROM jobs WHERE job_id = ANY($1::text[])
"""
CHECKPOINT_SQL = "SELECT stream_seq FROM checkpoint WHERE name = 'events'"


async def load(st: state.ApiState, batch_id: str) -> tuple[batches.Row, list[batches.Row]] | None:
    """The batch and its members: the read model, or folded from the log when the projection lags."""
    try:
        subject = subjects.batch_event(batch_id, batches.SHORT_TYPE)
    except ValueError:
        return None
    row = await st.pool.fetchrow(BATCH_SQL, batch_id)
    last = await st.bus.last_message(subjects.EVENTS, subject)
    if row is not None and (last is None or last[0] <= row["last_seq"]):
        members = [dict(m) for m in await st.pool.fetch(MEMBERS_SQL, [batch_id])]
        return dict(row), members
    if last is None:
        return None
    folded, members = batches.fold(await st.bus.history(subjects.EVENTS, subject))
    return (folded, members) if folded is not None else None


async def _projection_lags(st: state.ApiState) -> bool:
    """Whether the read models are behind the event log right now."""
    checkpoint = await st.pool.fetchval(CHECKPOINT_SQL)
    return int(checkpoint or 0) < await st.bus.stream_last_seq(subjects.EVENTS)


async def member_jobs(st: state.ApiState, members: list[batches.Row], *, fresh: bool) -> dict[str, batches.Row]:
    """The member jobs' rows by job id; with `fresh` and the projection behind the log, those it shows
    unfinished are folded from the log (up to FRESH_MAX), so a GET right after a wait sees what the wait saw."""
    ids = [m["job_id"] for m in members]
    # the lag is read before the rows: read after, a projection committing in between would pass for
    # caught up while the rows read are the older ones
    lagging = fresh and bool(ids) and await _projection_lags(st)
    jobs = {r["job_id"]: dict(r) for r in await st.pool.fetch(JOBS_SQL, ids)} if ids else {}
    stale = [i for i in ids if i not in jobs or jobs[i]["status"] not in batches.FINAL][:FRESH_MAX]
    if lagging and stale:
        rows = await asyncio.gather(*(fresh_job(st, i) for i in stale))
        jobs.update({job_id: row for job_id, row in zip(stale, rows, strict=True) if row is not None})
    return jobs


def _error_of(job: batches.Row) -> str:
    return str(job.get("last_error") or job["status"])


async def response(st: state.ApiState, job_id: str, job: batches.Row | None) -> dict[str, Any] | None:
    """A finished task's response in Laddr's shape `{status, result|error, job_id, prompt_id}`; None before."""
    state_ = batches.member_state(job)
    if job is None or not batches.is_recorded(state_):
        return None
    out: dict[str, Any] = {"status": state_}
    if state_ == "success":
        answer = laddr_common.inner(await laddr_common.resolve(st, job_id, job.get("result")))
        out["result"] = answer.get("result") if isinstance(answer, dict) and "result" in answer else answer
    else:
        out["error"] = _error_of(job)
    return {**out, "job_id": job_id, "prompt_id": job_id}


async def outputs(st: state.ApiState, members: list[batches.Row], jobs: dict[str, batches.Row]) -> dict[str, Any]:
    _, summary, _ = batches.progress(members, jobs)
    results: dict[str, Any] = {}
    for m in members:
        job = jobs.get(m["job_id"])
        answer = await response(st, m["job_id"], job)
        if answer is None or job is None:
            continue
        results[m["job_id"]] = {
            "status": answer["status"],
            "response": answer,
            "metadata": {
                "agent_name": m["agent_name"],
                "batch_index": m["batch_index"],
                "recorded_at": views.timestamp(job.get("completed_at")),
            },
        }
    return {"results": results, "summary": summary}


def summary_view(row: batches.Row, members: list[batches.Row], jobs: dict[str, batches.Row]) -> dict[str, Any]:
    status, _, completed_at = batches.progress(members, jobs)
    ids = [m["job_id"] for m in members]
    return {
        "batch_id": row["batch_id"],
        "agent_name": row["agent_name"],
        "status": status,
        "task_count": len(members),
        "job_ids": ids,
        "task_ids": ids,
        "created_at": views.timestamp(row["created_at"]),
        "completed_at": views.timestamp(completed_at),
    }

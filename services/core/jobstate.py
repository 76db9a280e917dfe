"""The job aggregate: `evolve_job(row, seq, env) -> row` folds a job's events into its state.

The one fold of job events: the projector writes its result as the `jobs` row, the API folds
a job straight from the log when the projection lags (read your writes), and the dispatcher
reads a job's state from the log the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from services.core import envelope

Row = dict[str, Any]

#: outcome event type → the status it gives the job (and the attempt)
OUTCOME_STATUS = {
    "job.succeeded": "succeeded",
    "job.failed": "failed",
    "job.timed_out": "timed_out",
    "job.cancelled": "cancelled",
}
FINAL_STATUSES = frozenset({"succeeded", "failed", "timed_out", "dead", "skipped", "cancelled"})


def event_time(env: envelope.Envelope) -> datetime:
    return envelope.parse_time(env.time)


def new_job_row(job_id: str, data: dict[str, Any], env: envelope.Envelope) -> Row:
    return {
        "job_id": job_id,
        "plugin": data.get("plugin") or "unknown",
        "command": data.get("command") or "unknown",
        "status": "queued",
        "submitted_by": data.get("submitted_by") or "api",
        "payload": data.get("payload"),
        "result": None,
        "last_error": None,
        "attempt": int(data.get("attempt") or 1),
        "parent_job_id": data.get("parent_job_id"),
        "correlation_id": env.correlation_id or job_id,
        "pipeline": data.get("pipeline"),
        "step_id": data.get("step_id"),
        "created_at": envelope.parse_time(data["created_at"]) if data.get("created_at") else event_time(env),
        "started_at": None,
        "completed_at": None,
        "last_seq": 0,
    }


def _attempt(data: Mapping[str, Any], row: Row) -> int:
    """The attempt an event names, else the row's."""
    return int(data["attempt"] if "attempt" in data else row["attempt"])


def evolve_job(row: Row | None, seq: int, env: envelope.Envelope) -> Row | None:
    """The job row after `env` (stream sequence `seq`); None when the event says nothing about a job row."""
    job_id = env.job_id
    if job_id is None or not env.type.startswith("job."):
        return row
    data = env.data
    if row is None:
        if env.type == "job.rejected":
            cmd = data.get("command") or {}
            row = new_job_row(job_id, cmd, env)
        elif env.type == "job.log":
            return None
        else:
            row = new_job_row(job_id, data, env)
    elif seq <= row["last_seq"]:
        return row  # already applied (redelivery or replay overlap)
    row = dict(row)
    row["last_seq"] = seq
    kind = env.type
    if kind == "job.queued":
        for key in ("plugin", "command", "submitted_by", "payload", "parent_job_id", "pipeline", "step_id"):
            if data.get(key) is not None:
                row[key] = data[key]
        if data.get("created_at"):
            row["created_at"] = envelope.parse_time(data["created_at"])
    elif kind == "job.started":
        row.update(
            status="running",
            attempt=_attempt(data, row),
            started_at=event_time(env),
            completed_at=None,
        )
    elif kind in OUTCOME_STATUS:
        row.update(status=OUTCOME_STATUS[kind], attempt=_attempt(data, row), completed_at=event_time(env))
        if kind == "job.succeeded":
            row.update(result=data.get("result"), last_error=None)
        else:
            row.update(last_error=data.get("error") or data.get("reason"), result=data.get("result") or row["result"])
    elif kind == "job.retry_scheduled":
        row.update(status="queued", attempt=_attempt(data, row))
    elif kind == "job.dead":
        row.update(status="dead", last_error=data.get("error") or row["last_error"], completed_at=event_time(env))
    elif kind == "job.skipped":
        row.update(status="skipped", last_error=data.get("reason"), completed_at=event_time(env))
    elif kind == "job.rejected":
        row.update(status="failed", last_error=f"rejected: {data.get('reason')}", completed_at=event_time(env))
    return row


def log_line(line: dict[str, Any]) -> dict[str, str]:
    """One of a plugin's log lines as `job.log` records and /job-logs hold it."""
    return {"level": str(line.get("level", "info")), "message": str(line.get("message", ""))}


def log_lines(data: dict[str, Any]) -> list[dict[str, str]]:
    """The plugin's log lines an outcome event carries in its result (`result.logs`), as /job-logs shows them;
    [] for an offloaded result or one without lines (those lines were stored as `job.log` records)."""
    result = data.get("result")
    lines = result.get("logs") if isinstance(result, dict) else None
    if not isinstance(lines, list):
        return []
    return [log_line(line) for line in lines if isinstance(line, dict)]


def fold(history: Iterable[tuple[int, envelope.Envelope]]) -> Row | None:
    """A job's row from its events in the log ((stream seq, envelope) pairs, oldest first); None without any."""
    row: Row | None = None
    for seq, env in history:
        row = evolve_job(row, seq, env)
    return row

"""Response shapes of the Ductile dialect built from read-model rows (and from the event
log itself when the projection has not caught up yet)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.core import envelope


def _ts(value: datetime | None) -> str | None:
    return envelope.rfc3339(value).replace(".000000Z", "Z") if value is not None else None


def job(row: dict[str, Any]) -> dict[str, Any]:
    """GET /job/{id}."""
    return {
        "job_id": row["job_id"],
        "status": row["status"],
        "plugin": row["plugin"],
        "command": row["command"],
        "submitted_by": row["submitted_by"],
        "attempt": row["attempt"],
        "parent_job_id": row.get("parent_job_id"),
        "created_at": _ts(row["created_at"]),
        "started_at": _ts(row.get("started_at")),
        "completed_at": _ts(row.get("completed_at")),
        "result": row.get("result"),
        "last_error": row.get("last_error"),
    }


def job_summary(row: dict[str, Any]) -> dict[str, Any]:
    """One entry of GET /jobs."""
    return {
        "job_id": row["job_id"],
        "plugin": row["plugin"],
        "command": row["command"],
        "status": row["status"],
        "created_at": _ts(row["created_at"]),
        "started_at": _ts(row.get("started_at")),
        "completed_at": _ts(row.get("completed_at")),
        "attempt": row["attempt"],
    }


timestamp = _ts


def job_log(row: dict[str, Any], *, include_result: bool = False) -> dict[str, Any]:
    """One entry of GET /job-logs (one attempt); the result only when asked for."""
    out = {
        "job_id": row["job_id"],
        "log_id": row["log_id"],
        "plugin": row["plugin"],
        "command": row["command"],
        "status": row["status"],
        "attempt": row["attempt"],
        "submitted_by": row["submitted_by"],
        "created_at": _ts(row["created_at"]),
        "completed_at": _ts(row.get("completed_at")),
        "last_error": row.get("last_error"),
        "stderr": row.get("stderr"),
        "logs": row.get("logs") or [],
    }
    if include_result:
        out["result"] = row.get("result")
    return out


def tree_node(row: dict[str, Any]) -> dict[str, Any]:
    """One entry of GET /job/{id}/tree."""
    return {
        "job_id": row["job_id"],
        "parent_job_id": row.get("parent_job_id"),
        "plugin": row["plugin"],
        "command": row["command"],
        "status": row["status"],
        "step_id": row.get("step_id"),
        "pipeline": row.get("pipeline"),
        "result": row.get("result"),
        "last_error": row.get("last_error"),
        "started_at": _ts(row.get("started_at")),
        "completed_at": _ts(row.get("completed_at")),
    }

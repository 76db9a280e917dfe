"""Pure folds of events into read-model rows: the job fold (`services.core.jobstate.evolve_job`)
and `evolve_attempt(row, seq, env, job) -> row` for /job-logs. The projector loads the rows a
batch touches, folds the batch through these, and writes them back; rebuild uses the same folds.
"""

from __future__ import annotations

from services.core import envelope, jobstate
from services.core.jobstate import FINAL_STATUSES, OUTCOME_STATUS, Row, evolve_job, new_job_row

__all__ = [
    "ATTEMPT_COLUMNS",
    "FINAL_STATUSES",
    "JOB_COLUMNS",
    "OUTCOME_STATUS",
    "attempt_key",
    "evolve_attempt",
    "evolve_job",
    "new_job_row",
]

JOB_COLUMNS = (
    "job_id",
    "plugin",
    "command",
    "status",
    "submitted_by",
    "payload",
    "result",
    "last_error",
    "attempt",
    "parent_job_id",
    "correlation_id",
    "pipeline",
    "step_id",
    "created_at",
    "started_at",
    "completed_at",
    "last_seq",
)
ATTEMPT_COLUMNS = (
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


def evolve_attempt(row: Row | None, seq: int, env: envelope.Envelope, job: Row | None) -> Row | None:
    """The per-attempt /job-logs row after `env`; None for events that are not about an attempt."""
    if attempt_key(env) is None:
        return row
    data = env.data
    attempt = int(data.get("attempt") or 1)
    if row is None:
        row = {
            "log_id": f"{env.job_id}-{attempt}",
            "job_id": env.job_id,
            "attempt": attempt,
            "plugin": data.get("plugin") or (job or {}).get("plugin") or "unknown",
            "command": data.get("command") or (job or {}).get("command") or "unknown",
            "status": "running",
            "submitted_by": (job or {}).get("submitted_by") or "api",
            "created_at": (job or {}).get("created_at") or jobstate.event_time(env),
            "started_at": None,
            "completed_at": None,
            "last_error": None,
            "stderr": None,
            "result": None,
            "logs": [],
            "last_seq": 0,
        }
    elif seq <= row["last_seq"]:
        return row
    row = dict(row)
    row["last_seq"] = seq
    if env.type == "job.started":
        row["started_at"] = jobstate.event_time(env)
    elif env.type == "job.log":
        row["logs"] = [*row["logs"], {"level": data.get("level", "info"), "message": data.get("message", "")}]
    else:
        row.update(
            status=OUTCOME_STATUS[env.type],
            completed_at=jobstate.event_time(env),
            stderr=data.get("stderr"),
            last_error=data.get("error") or data.get("reason"),
            result=data.get("result"),
        )
        if not row["logs"]:
            # the lines ride in the outcome; a log written before that (or an offloaded result) has `job.log`
            # records instead, already folded, and the result's copy of the same lines is not added twice
            row["logs"] = jobstate.log_lines(data)
    return row


def attempt_key(env: envelope.Envelope) -> tuple[str, int] | None:
    """(job_id, attempt) of an event about one attempt; None otherwise (a job cancelled in the queue had none)."""
    if env.job_id is None or env.type not in ("job.started", "job.log", *OUTCOME_STATUS):
        return None
    if env.type == "job.cancelled" and env.data.get("while") == "queued":
        return None
    return env.job_id, int(env.data.get("attempt") or 1)

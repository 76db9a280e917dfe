"""Cancel decisions: cmd.job.<id>.cancel + the job's folded state → events.

A queued job (or one waiting for a retry) is cancelled at once; a running one gets
`job.cancel_requested` and a plain-NATS signal to its runner, which stops the plugin like a
deadline and records `job.cancelled` itself. A final job is left alone.
"""

from __future__ import annotations

from typing import Any

from services.core import envelope, subjects
from services.dispatcher import decisions

#: a failed or timed-out attempt is always followed by the dispatcher's retry or dead letter
FINAL = frozenset({"succeeded", "dead", "skipped", "cancelled"})


def decide_cancel(cmd: envelope.Envelope, job: dict[str, Any] | None, *, source: str) -> decisions.Published:
    job_id = cmd.job_id
    if job_id is None or job is None or job["status"] in FINAL:
        return []
    reason = str(cmd.data.get("reason") or "cancelled by request")
    correlation_id = cmd.correlation_id or job.get("correlation_id") or job_id
    requested = envelope.make(
        "job.cancel_requested",
        source=source,
        job_id=job_id,
        id=f"{job_id}:cancel_requested",
        causation_id=cmd.id,
        correlation_id=correlation_id,
        data={"reason": reason, "status": job["status"]},
    )
    out: decisions.Published = [(subjects.job_event(job_id, "cancel_requested"), requested)]
    if job["status"] == "queued":
        cancelled = envelope.make(
            "job.cancelled",
            source=source,
            job_id=job_id,
            id=f"{job_id}:cancelled",
            causation_id=cmd.id,
            correlation_id=correlation_id,
            data={
                "reason": reason,
                "attempt": job.get("attempt") or 1,
                "while": "queued",
                "plugin": job.get("plugin"),
                "command": job.get("command"),
            },
        )
        out.append((subjects.job_event(job_id, "cancelled"), cancelled))
    return out

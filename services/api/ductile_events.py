"""Ductile's view of the event log for GET /events: each envelope becomes the hub event a Ductile
client listens for, with Ductile's event name and its flat data (shared/spec/ductile-conformance.md §4).

    job.queued      -> job.enqueued (a root job), router.enqueued (a routed step), pipeline.enqueued
    job.started     -> job.started
    job.succeeded   -> job.completed                  status "succeeded"
    job.dead        -> job.failed / job.timed_out     status "dead": the job's end, after its retries
    job.failed      -> job.attempt_failed             one attempt; Ductile's job.failed means the job's end
    job.timed_out   -> job.attempt_timed_out
    job.retry_scheduled, job.skipped                  same names, Ductile's keys
    schedule.skipped -> scheduler.skipped

Any other envelope keeps its own type, with its data flattened (`job_id`, `at` and the data keys).
Every item also carries `event_id` (the envelope id) and `at` (its time), which no Ductile key
means otherwise. `?format=log` on GET /events sends the envelopes themselves instead.
"""

from __future__ import annotations

from typing import Any

from services.core import envelope

JSONDict = dict[str, Any]


def _base(env: envelope.Envelope) -> JSONDict:
    return {"event_id": env.id, "at": env.time, "job_id": env.job_id}


def _enqueued(env: envelope.Envelope) -> tuple[str, JSONDict]:
    data = env.data
    out = _base(env)
    submitted_by = data.get("submitted_by") or "api"
    if data.get("pipeline_root") or data.get("plugin") == "pipeline":
        pipeline = data.get("pipeline") or data.get("command")
        return "pipeline.enqueued", {
            **out,
            "job_ids": [env.job_id],
            "job_count": 1,
            "pipeline": pipeline,
            "submitted_by": submitted_by,
        }
    common = {"plugin": data.get("plugin"), "command": data.get("command")}
    if data.get("parent_job_id"):
        return "router.enqueued", {
            **out,
            "parent_job_id": data["parent_job_id"],
            **common,
            "pipeline": data.get("pipeline"),
            "step_id": data.get("step_id"),
            "event_context_id": env.correlation_id,
            "submitted_by": submitted_by,
        }
    return "job.enqueued", {**out, **common, "submitted_by": submitted_by, "direct": submitted_by == "api"}


def _outcome(env: envelope.Envelope, name: str, status: str) -> tuple[str, JSONDict]:
    data = env.data
    plugin = data.get("plugin")
    out = {
        **_base(env),
        "plugin": plugin,
        "command": data.get("command"),
        "status": status,
        "attempt": data.get("attempt"),
        "duration_ms": data.get("duration_ms"),
    }
    timed_out = name.endswith("timed_out")
    if status != "succeeded":
        error = str(data.get("error") or ("timed out" if timed_out else "failed"))
        text = f"Job timed out [{plugin}]" if timed_out else f"Job failed [{plugin}]: {error}"
        out.update(error=error, message=error, text=text)
    if "reason" in data:
        out["reason"] = data["reason"]
    return name, out


def _dead(env: envelope.Envelope) -> tuple[str, JSONDict]:
    name = "job.timed_out" if env.data.get("last_status") == "timed_out" else "job.failed"
    return _outcome(env, name, "dead")


def _retry(env: envelope.Envelope) -> tuple[str, JSONDict]:
    data = env.data
    delay_s = data.get("delay_s")
    out: JSONDict = {
        **_base(env),
        "attempt": data.get("attempt"),
        "retry_count": data.get("after_attempt"),
        "retry_policy_owner": "core",
        "plugin_retry_field": "v2_boundary_compatibility_signal",
        "backoff_ms": round(float(delay_s) * 1000) if isinstance(delay_s, int | float) else None,
        "next_retry_at": data.get("due_at"),
        "reason": data.get("error"),
    }
    max_attempts, base_s = data.get("max_attempts"), data.get("backoff_base_s")
    if isinstance(max_attempts, int):  # events recorded before these keys existed carry neither
        out.update(max_attempts=max_attempts, max_retries=max(0, max_attempts - 1))
        if isinstance(base_s, int | float):  # each retry's base delay, before its jitter
            out["backoff_schedule"] = [round(base_s * 1000 * 2**i) for i in range(max(0, max_attempts - 1))]
    return "job.retry_scheduled", out


def _started(env: envelope.Envelope) -> tuple[str, JSONDict]:
    data = env.data
    return "job.started", {
        **_base(env),
        "plugin": data.get("plugin"),
        "command": data.get("command"),
        "attempt": data.get("attempt"),
        "submitted_by": data.get("submitted_by"),
        "runner": data.get("runner"),
    }


def _skipped(env: envelope.Envelope) -> tuple[str, JSONDict]:
    data = env.data
    return "job.skipped", {
        **_base(env),
        "plugin": data.get("plugin"),
        "command": data.get("command"),
        "reason": data.get("reason"),
    }


def _schedule_skipped(env: envelope.Envelope) -> tuple[str, JSONDict]:
    data = env.data
    return "scheduler.skipped", {**data, **_base(env), "schedule_id": data.get("schedule_id", data.get("id"))}


_MAPPED = {
    "job.queued": _enqueued,
    "job.started": _started,
    "job.succeeded": lambda env: _outcome(env, "job.completed", "succeeded"),
    "job.failed": lambda env: _outcome(env, "job.attempt_failed", "failed"),
    "job.timed_out": lambda env: _outcome(env, "job.attempt_timed_out", "timed_out"),
    "job.dead": _dead,
    "job.retry_scheduled": _retry,
    "job.skipped": _skipped,
    "schedule.skipped": _schedule_skipped,
}


def translate(env: envelope.Envelope) -> tuple[str, JSONDict]:
    """(Ductile event name, flat data) of one envelope."""
    mapped = _MAPPED.get(env.type)
    if mapped is not None:
        return mapped(env)
    return env.type, {**env.data, **_base(env)}

"""Retry policy: a failed or timed-out attempt in, `job.retry_scheduled` + a delayed work item
(or `job.dead`) out. Backoff is `base · 2^(attempt-1) + random[0, base/4]`.

The delayed work item is parked on delay.work.<plugin>.<command> in the WORK stream, so a
restarted dispatcher still delivers it when it falls due.
"""

from __future__ import annotations

import functools
import random
from datetime import timedelta
from typing import Any

from services.core import config as config_mod
from services.core import envelope, subjects
from services.dispatcher import decisions

Published = decisions.Published


def backoff_s(base_s: float, attempt: int, *, rand: random.Random | None = None) -> float:
    """Delay before attempt `attempt + 1` after attempt `attempt` failed."""
    jitter = (rand or random).uniform(0, base_s / 4) if base_s > 0 else 0.0
    growth: float = 2 ** (attempt - 1)  # int ** int: an int, or a float for attempt < 1
    return base_s * growth + jitter


ROUTING_KEYS = ("route", "step_id", "context")


def dead_event(
    job_id: str,
    *,
    attempt: int,
    error: str,
    last_status: str,
    reason: str,
    source: str,
    correlation_id: str | None,
    plugin: str | None = None,
    command: str | None = None,
    routing: dict[str, Any] | None = None,
) -> tuple[str, envelope.Envelope]:
    env = envelope.make(
        "job.dead",
        source=source,
        job_id=job_id,
        id=f"{job_id}:dead",
        causation_id=job_id,
        correlation_id=correlation_id,
        data={
            "attempt": attempt,
            "error": error,
            "last_status": last_status,
            "reason": reason,
            "plugin": plugin,
            "command": command,
            **(routing or {}),
        },
    )
    return subjects.job_event(job_id, "dead"), env


def decide_outcome(
    outcome: envelope.Envelope,
    queued: envelope.Envelope | None,
    config: config_mod.Config,
    *,
    source: str,
    rand: random.Random | None = None,
) -> Published:
    """After job.failed / job.timed_out: schedule the next attempt or dead-letter the job."""
    job_id = outcome.job_id
    assert job_id is not None
    data = outcome.data
    attempt = int(data.get("attempt", 1))
    error = str(data.get("error") or "failed")
    last_status = outcome.type.removeprefix("job.")
    correlation_id = outcome.correlation_id or job_id
    policy = config.plugin(str(data.get("plugin"))).retry
    dead = functools.partial(
        dead_event,
        job_id,
        attempt=attempt,
        error=error,
        last_status=last_status,
        source=source,
        correlation_id=correlation_id,
        plugin=data.get("plugin"),
        command=data.get("command"),
        routing={k: data[k] for k in ROUTING_KEYS if k in data},
    )
    if data.get("retry") is False:
        return [dead(reason="permanent failure (not retryable)")]
    if attempt >= policy.max_attempts:
        return [dead(reason=f"retries exhausted after {attempt} attempt(s)")]
    if queued is None:
        return [dead(reason="the job's queued event is missing; cannot retry")]
    delay_s = backoff_s(policy.backoff_base_s, attempt, rand=rand)
    due = envelope.parse_time(outcome.time) + timedelta(seconds=delay_s)
    next_attempt = attempt + 1
    scheduled = envelope.make(
        "job.retry_scheduled",
        source=source,
        job_id=job_id,
        id=f"{job_id}:{attempt}:retry_scheduled",
        causation_id=outcome.id,
        correlation_id=correlation_id,
        data={
            "attempt": next_attempt,
            "after_attempt": attempt,
            "delay_s": round(delay_s, 3),
            "due_at": envelope.rfc3339(due),
            "error": error,
            "max_attempts": policy.max_attempts,
            "backoff_base_s": policy.backoff_base_s,
        },
    )
    return [
        (subjects.job_event(job_id, "retry_scheduled"), scheduled),
        delayed_work(
            job_id,
            queued.data,
            attempt=next_attempt,
            due_at=envelope.rfc3339(due),
            config=config,
            source=source,
            correlation_id=correlation_id,
        ),
    ]


def delayed_work(
    job_id: str,
    job: dict[str, Any],
    *,
    attempt: int,
    due_at: str,
    config: config_mod.Config,
    source: str,
    correlation_id: str | None,
) -> tuple[str, envelope.Envelope]:
    """The work item of `attempt`, parked until `due_at`."""
    _, env = decisions.work_item(
        job_id, job, attempt=attempt, config=config, source=source, correlation_id=correlation_id
    )
    parked = envelope.Envelope(
        id=f"{env.id}:delayed",
        type=env.type,
        time=env.time,
        source=env.source,
        job_id=env.job_id,
        causation_id=env.causation_id,
        correlation_id=env.correlation_id,
        data={**env.data, "not_before": due_at},
    )
    return subjects.delayed_work(job["plugin"], job["command"]), parked


def release(parked: envelope.Envelope) -> tuple[str, envelope.Envelope]:
    """The due work item to publish on work.<plugin>.<command> (same id as an undelayed one)."""
    data = {k: v for k, v in parked.data.items() if k != "not_before"}
    env = envelope.Envelope(
        id=parked.id.removesuffix(":delayed"),
        type=parked.type,
        time=envelope.rfc3339(envelope.now()),
        source=parked.source,
        job_id=parked.job_id,
        causation_id=parked.causation_id,
        correlation_id=parked.correlation_id,
        data=data,
    )
    return subjects.work(data["plugin"], data["command"]), env

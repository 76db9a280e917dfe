"""One attempt of one job: work item in, events out. Pure assembly of the events an
`Outcome` produces (logs, emitted events, state updates, the outcome itself), with
deterministic ids so a redelivered work item cannot publish anything twice.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from services.core import emitted as emitted_mod
from services.core import envelope, jobstate, subjects
from services.runner import protocol

Published = list[tuple[str, envelope.Envelope]]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WorkItem:
    job_id: str
    plugin: str
    command: str
    payload: dict[str, Any]
    attempt: int
    timeout_s: float
    submitted_by: str = "api"
    event: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    correlation_id: str | None = None
    #: where a pipeline step's job sits (pipeline, root, depth) and its step id; handed back in the
    #: outcome so the dispatcher can route on without reading the job's queued event
    route: dict[str, Any] | None = None
    step_id: str | None = None
    #: on whose behalf the job runs (services/core/scopes.py); None = started by the system
    authority: dict[str, Any] | None = None
    #: the EVENTS sequence of the job's `queued` event, set by the dispatcher: when nothing was recorded for the
    #: job since (no cancel, no other start), the runner claims the attempt in one compare-and-set on it
    claim_after: int | None = None

    def routing(self) -> dict[str, Any]:
        """The routing facts an outcome event carries (`route` is None for a job outside any pipeline)."""
        return {"route": self.route, "step_id": self.step_id, "context": self.context}

    @classmethod
    def from_envelope(cls, env: envelope.Envelope) -> WorkItem:
        data = env.data
        assert env.job_id is not None, "work item without job_id"
        return cls(
            job_id=env.job_id,
            plugin=data["plugin"],
            command=data["command"],
            payload=data.get("payload") or {},
            attempt=int(data.get("attempt", 1)),
            timeout_s=float(data["timeout_s"]),
            submitted_by=data.get("submitted_by", "api"),
            event=data.get("event"),
            context=data.get("context"),
            correlation_id=env.correlation_id or env.job_id,
            route=data.get("route"),
            step_id=data.get("step_id"),
            authority=data.get("authority"),
            claim_after=int(data["claim_after"]) if isinstance(data.get("claim_after"), int) else None,
        )


def _event(
    item: WorkItem, short: str, data: dict[str, Any], *, source: str, suffix: str = "", time: datetime | None = None
) -> tuple[str, envelope.Envelope]:
    env = envelope.make(
        f"job.{short}",
        source=source,
        job_id=item.job_id,
        data=data,
        id=f"{item.job_id}:{item.attempt}:{short}{suffix}",
        causation_id=item.job_id,
        correlation_id=item.correlation_id,
        time=time,
    )
    return subjects.job_event(item.job_id, short), env


def started_event(item: WorkItem, *, source: str, work_seq: int | None = None) -> tuple[str, envelope.Envelope]:
    """The claim of an attempt; `work_seq` is the WORK stream sequence of the message that claims it."""
    runner = source.partition("/")[2] or source
    data: dict[str, Any] = {
        "plugin": item.plugin,
        "command": item.command,
        "attempt": item.attempt,
        "runner": runner,
        "submitted_by": item.submitted_by,
    }
    if work_seq is not None:
        data["work_seq"] = work_seq
    return _event(item, "started", data, source=source)


def cancelled_event(item: WorkItem, *, reason: str, source: str) -> tuple[str, envelope.Envelope]:
    return _event(
        item,
        "cancelled",
        {"plugin": item.plugin, "command": item.command, "attempt": item.attempt, "reason": reason, **item.routing()},
        source=source,
    )


def lost_event(item: WorkItem, *, source: str) -> tuple[str, envelope.Envelope]:
    """The record of an attempt whose runner died mid-run: failed, retryable, marked lost."""
    return _event(
        item,
        "failed",
        {
            "plugin": item.plugin,
            "command": item.command,
            "attempt": item.attempt,
            "retry": True,
            "lost": True,
            "error": f"attempt {item.attempt} was lost: its runner stopped while the plugin ran",
            **item.routing(),
        },
        source=source,
    )


def outcome_events(
    item: WorkItem,
    outcome: protocol.Outcome,
    *,
    source: str,
    state: dict[str, Any] | None = None,
    stored_result: Any = None,
    facts: list[dict[str, Any]] | None = None,
) -> Published:
    """Every event of a finished attempt, in the order they must be stored. `stored_result` replaces the
    response as the outcome's `result` (the offload pointer of a large one, services/core/offload.py);
    `facts` are the manifest's `fact_outputs` of its state_updates (services/runner/plugin_state.py)."""
    out: Published = []
    response = outcome.response or {}
    result = stored_result if stored_result is not None else outcome.response
    # the succeeded event's time is the emitted events' `timestamp` (the dispatcher stamps routed events from it)
    at = envelope.now()
    # a plugin's log lines travel in the outcome's `result.logs`, where the projector reads them; only when the
    # outcome cannot carry them (the result was offloaded, or the status has no result) is each its own record
    carried = result is outcome.response and outcome.status in ("succeeded", "failed")
    for i, line in enumerate([] if carried else response.get("logs") or []):
        out.append(
            _event(item, "log", {"attempt": item.attempt, **jobstate.log_line(line)}, source=source, suffix=f":{i}")
        )
    if outcome.status == "succeeded":
        for i, emitted in enumerate(response.get("events") or []):
            env = envelope.make(
                "plugin.emitted",
                source=source,
                job_id=item.job_id,
                id=f"{item.job_id}:{item.attempt}:emitted:{i}",
                causation_id=item.job_id,
                correlation_id=item.correlation_id,
                data={
                    "plugin": item.plugin,
                    "command": item.command,
                    "attempt": item.attempt,
                    "type": emitted["type"],
                    "payload": emitted.get("payload") or {},
                    "dedupe_key": emitted.get("dedupe_key"),
                    **{
                        key: value
                        for key, value in emitted_mod.stamped(
                            emitted,
                            plugin=item.plugin,
                            job_id=item.job_id,
                            attempt=item.attempt,
                            index=i,
                            at=envelope.rfc3339(at),
                        ).items()
                        if key in emitted_mod.STAMP
                    },
                },
            )
            out.append((subjects.plugin_event(item.plugin, "emitted"), env))
        for i, fact in enumerate(facts or []):
            env = envelope.make(
                "plugin.fact_recorded",
                source=source,
                job_id=item.job_id,
                id=f"{item.job_id}:{item.attempt}:fact:{i}",
                causation_id=item.job_id,
                correlation_id=item.correlation_id,
                data={"plugin": item.plugin, "command": item.command, "attempt": item.attempt, **fact},
            )
            out.append((subjects.plugin_event(item.plugin, "fact_recorded"), env))
        updates = response.get("state_updates")
        if updates and (state is not None or not facts):
            env = envelope.make(
                "plugin.state_updated",
                source=source,
                job_id=item.job_id,
                id=f"{item.job_id}:{item.attempt}:state_updated",
                causation_id=item.job_id,
                correlation_id=item.correlation_id,
                data={"plugin": item.plugin, "updates": updates, "state": state or {}},
            )
            out.append((subjects.plugin_event(item.plugin, "state_updated"), env))
    common = {
        "plugin": item.plugin,
        "command": item.command,
        "attempt": item.attempt,
        "duration_ms": outcome.duration_ms,
        "stderr": outcome.stderr or None,
        **item.routing(),
    }
    if outcome.status == "succeeded":
        out.append(
            _event(
                item, "succeeded", {**common, "result": result if result is not None else {}}, source=source, time=at
            )
        )
    elif outcome.status == "timed_out":
        out.append(
            _event(
                item,
                "timed_out",
                {**common, "error": outcome.error or "timed out", "retry": outcome.retry},
                source=source,
            )
        )
    elif outcome.status == "cancelled":
        out.append(_event(item, "cancelled", {**common, "reason": outcome.error or "cancelled"}, source=source))
    else:
        out.append(
            _event(
                item,
                "failed",
                {
                    **common,
                    "error": outcome.error or "failed",
                    "retry": outcome.retry,
                    "exit_code": outcome.exit_code,
                    "result": result,
                },
                source=source,
            )
        )
    return out

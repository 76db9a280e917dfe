"""Laddr batches (POST /api/agents/{name}/batch): a set of agent jobs with its own id and progress.

The aggregate is event-sourced on `evt.batch.<batch_id>.tasks_added` (type `batch.tasks_added`,
published by the API after the member jobs' submit commands): each event lists the jobs it adds,
in order, with their agent and inputs. `evolve(row, seq, env)` folds one event into the batch row
plus its new members; a member's `batch_index` is its position in the log's order, so the projector
and `headrace rebuild` give every member the same index.

Progress is never stored: `progress(members)` computes the status and the Laddr `summary` from the
member jobs' rows (their outcomes are decided by the dispatcher, as for every job):

    no member started        → submitted
    some started or finished → running
    every member final       → completed (all succeeded) | failed (any did not)

A member is final once its job is `succeeded`, `dead`, `skipped`, `cancelled` or rejected; a failed
or timed-out attempt that the dispatcher may still retry is not. Imported by the projector and the
API; imports nothing of theirs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.core import envelope

Row = dict[str, Any]

EVENT_TYPE = "batch.tasks_added"
SHORT_TYPE = "tasks_added"
BATCH_COLUMNS = ("batch_id", "agent_name", "task_count", "submitted_by", "created_at", "last_seq")
MEMBER_COLUMNS = ("batch_id", "batch_index", "job_id", "agent_name", "task", "added_at", "added_seq")

#: the job statuses after which nothing more happens to a batch member
FINAL = frozenset({"succeeded", "dead", "skipped", "cancelled"})


def tasks_added(
    batch_id: str,
    *,
    agent_name: str,
    tasks: list[tuple[str, str, dict[str, Any]]],
    source: str,
    submitted_by: str,
    principal: str | None,
    event_id: str | None = None,
) -> envelope.Envelope:
    """The event that adds `tasks` ((job_id, agent_name, inputs) in order) to batch `batch_id`;
    `agent_name` is the batch's agent when this event creates it."""
    return envelope.make(
        EVENT_TYPE,
        source=source,
        id=event_id,
        data={
            "batch_id": batch_id,
            "agent_name": agent_name,
            "submitted_by": submitted_by,
            "principal": principal,
            "tasks": [{"job_id": job_id, "agent_name": agent, "inputs": inputs} for job_id, agent, inputs in tasks],
        },
    )


def evolve(row: Row | None, seq: int, env: envelope.Envelope) -> tuple[Row | None, list[Row]]:
    """The batch row after `env` and the members it adds; (row, []) for events already applied or not
    about a batch."""
    if env.type != EVENT_TYPE:
        return row, []
    data = env.data
    if row is not None and seq <= row["last_seq"]:
        return row, []
    at = envelope.parse_time(env.time)
    if row is None:
        row = {
            "batch_id": str(data["batch_id"]),
            "agent_name": str(data.get("agent_name") or ""),
            "task_count": 0,
            "submitted_by": str(data.get("submitted_by") or "laddr"),
            "created_at": at,
            "last_seq": 0,
        }
    row = dict(row)
    members = []
    for task in data.get("tasks") or []:
        members.append(
            {
                "batch_id": row["batch_id"],
                "batch_index": row["task_count"],
                "job_id": str(task["job_id"]),
                "agent_name": str(task.get("agent_name") or row["agent_name"]),
                "task": task.get("inputs") if isinstance(task.get("inputs"), dict) else {},
                "added_at": at,
                "added_seq": seq,
            }
        )
        row["task_count"] += 1
    row["last_seq"] = seq
    return row, members


def fold(history: list[tuple[int, envelope.Envelope]]) -> tuple[Row | None, list[Row]]:
    """A batch and its members from its events in the log (oldest first)."""
    row: Row | None = None
    members: list[Row] = []
    for seq, env in history:
        row, added = evolve(row, seq, env)
        members.extend(added)
    return row, members


def member_state(job: Row | None) -> str:
    """pending | running | success | error | cancelled, from the member job's row (None: not projected yet)."""
    if job is None or job["status"] == "queued":
        return "pending"
    status = job["status"]
    if status == "succeeded":
        return "success"
    if status == "cancelled":
        return "cancelled"
    if status in FINAL or (status == "failed" and job.get("started_at") is None):  # dead, skipped, rejected
        return "error"
    return "running"  # running, or a failed attempt awaiting the dispatcher's retry decision


def is_recorded(state: str) -> bool:
    return state in ("success", "error", "cancelled")


def progress(members: list[Row], jobs: dict[str, Row]) -> tuple[str, dict[str, int], datetime | None]:
    """(status, summary, completed_at) of a batch from its members and their job rows."""
    states = [member_state(jobs.get(m["job_id"])) for m in members]
    recorded = [s for s in states if is_recorded(s)]
    succeeded = sum(1 for s in recorded if s == "success")
    summary = {
        "total_expected": len(members),
        "recorded": len(recorded),
        "succeeded": succeeded,
        "failed": len(recorded) - succeeded,
    }
    if members and len(recorded) == len(members):
        finished = [jobs[m["job_id"]].get("completed_at") for m in members]
        completed_at = max((t for t in finished if t is not None), default=None)
        return ("completed" if succeeded == len(members) else "failed"), summary, completed_at
    if any(s != "pending" for s in states):
        return "running", summary, None
    return "submitted", summary, None

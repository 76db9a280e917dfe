"""The pure batch aggregate (services/core/batches.py): members take their index from the log's order,
an event already applied changes nothing, and the status/summary follow the member jobs' rows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from services.core import batches


def added(batch_id: str, agent: str, job_ids: list[str]) -> Any:
    return batches.tasks_added(
        batch_id,
        agent_name=agent,
        tasks=[(j, agent, {"message": j}) for j in job_ids],
        source="test",
        submitted_by="laddr",
        principal="p",
    )


def job(status: str, *, started: bool = True, done: int | None = None) -> dict[str, Any]:
    at = datetime(2026, 1, 1, 0, 0, done, tzinfo=UTC) if done is not None else None
    return {"status": status, "started_at": at if started else None, "completed_at": at}


def test_members_are_indexed_in_log_order_across_events() -> None:
    row, members = batches.fold([(5, added("b", "echo", ["j1", "j2"])), (9, added("b", "slow", ["j3"]))])
    assert row is not None and row["agent_name"] == "echo" and row["task_count"] == 3 and row["last_seq"] == 9
    assert [(m["job_id"], m["batch_index"], m["agent_name"]) for m in members] == [
        ("j1", 0, "echo"),
        ("j2", 1, "echo"),
        ("j3", 2, "slow"),
    ]
    assert members[0]["task"] == {"message": "j1"}


def test_an_event_at_or_below_the_row_changes_nothing() -> None:
    row, _ = batches.evolve(None, 5, added("b", "echo", ["j1"]))
    again, members = batches.evolve(row, 5, added("b", "echo", ["j1"]))
    assert again == row and members == []
    other, members = batches.evolve(row, 3, added("b", "echo", ["j0"]))
    assert other == row and members == []


def test_progress_from_member_jobs() -> None:
    _, members = batches.fold([(1, added("b", "echo", ["a", "b"]))])
    assert batches.progress(members, {})[0] == "submitted"
    assert batches.progress(members, {"a": job("queued", started=False)})[0] == "submitted"
    assert batches.progress(members, {"a": job("running")})[0] == "running"
    # a failed attempt awaiting the dispatcher's retry decision is not final; a rejected job is
    assert batches.progress(members, {"a": job("failed", done=1), "b": job("succeeded", done=2)})[0] == "running"
    status, summary, completed_at = batches.progress(
        members, {"a": job("failed", started=False, done=1), "b": job("succeeded", done=2)}
    )
    assert status == "failed" and summary == {"total_expected": 2, "recorded": 2, "succeeded": 1, "failed": 1}
    assert completed_at == datetime(2026, 1, 1, 0, 0, 2, tzinfo=UTC)
    status, summary, _ = batches.progress(members, {"a": job("succeeded", done=1), "b": job("succeeded", done=3)})
    assert status == "completed" and summary["succeeded"] == 2
    assert batches.progress(members, {"a": job("cancelled", done=1), "b": job("succeeded", done=3)})[0] == "failed"
    assert batches.member_state(job("dead", done=1)) == "error"
    assert batches.member_state(job("cancelled", done=1)) == "cancelled"

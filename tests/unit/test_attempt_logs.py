"""A plugin's log lines ride in the outcome (`result.logs`) instead of one `job.log` record per line (issue 13),
and the /job-logs row gets them exactly once whichever way they were stored: in the result, as records of
their own (an offloaded result, a status without one) or both (a log written before the change)."""

from __future__ import annotations

from typing import Any

from services.core import envelope, offload
from services.projector import read_models
from services.runner import attempt, protocol

ITEM = attempt.WorkItem(job_id="j1", plugin="echo", command="poll", payload={}, attempt=1, timeout_s=5)
LINES = [{"level": "info", "message": "one"}, {"level": "warn", "message": "two"}]
RESPONSE: dict[str, Any] = {"status": "ok", "result": "done", "logs": LINES}


def _outcome(status: Any = "succeeded", response: dict[str, Any] | None = None) -> protocol.Outcome:
    response = RESPONSE if response is None else response
    return protocol.Outcome(status=status, response=response, error=response.get("error"), duration_ms=3)


def _fold(events: list[tuple[str, envelope.Envelope]]) -> dict[str, Any] | None:
    row = None
    started = attempt.started_event(ITEM, source="runner/r1")[1]
    for seq, env in enumerate([started, *(env for _, env in events)], start=1):
        row = read_models.evolve_attempt(row, seq, env, None)
    return row


def test_lines_travel_in_the_succeeded_outcome_and_reach_the_row() -> None:
    events = attempt.outcome_events(ITEM, _outcome(), source="runner/r1", stored_result=RESPONSE)
    assert [env.type for _, env in events] == ["job.succeeded"]
    assert events[0][1].data["result"]["logs"] == LINES
    row = _fold(events)
    assert row is not None and row["logs"] == LINES and row["status"] == "succeeded"


def test_a_failed_outcome_carries_its_lines_too() -> None:
    response = {"status": "error", "error": "boom", "logs": LINES}
    events = attempt.outcome_events(ITEM, _outcome("failed", response), source="runner/r1")
    assert [env.type for _, env in events] == ["job.failed"]
    row = _fold(events)
    assert row is not None and row["logs"] == LINES and row["last_error"] == "boom"


def test_an_offloaded_result_keeps_one_record_per_line() -> None:
    pointer = offload.pointer_value("laddr", "responses/j1", 500_000)
    events = attempt.outcome_events(ITEM, _outcome(), source="runner/r1", stored_result=pointer)
    assert [env.type for _, env in events] == ["job.log", "job.log", "job.succeeded"]
    assert "logs" not in events[-1][1].data["result"]  # the outcome stays as small as the pointer
    row = _fold(events)
    assert row is not None and row["logs"] == LINES


def test_a_log_written_before_the_change_is_not_doubled() -> None:
    """Old logs hold a `job.log` per line and the same lines in the outcome's result."""
    records = [
        attempt._event(ITEM, "log", {"attempt": 1, **line}, source="runner/r1", suffix=f":{i}")
        for i, line in enumerate(LINES)
    ]
    events = [*records, *attempt.outcome_events(ITEM, _outcome(), source="runner/r1")]
    row = _fold(events)
    assert row is not None and row["logs"] == LINES


def test_a_result_without_lines_gives_an_empty_log() -> None:
    events = attempt.outcome_events(ITEM, _outcome(response={"status": "ok", "result": "x"}), source="runner/r1")
    row = _fold(events)
    assert row is not None and row["logs"] == []

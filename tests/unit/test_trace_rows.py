"""The projector's trace rows: a trace event's `parent` (an envelope id) becomes the row id of the
first earlier event with that id, from the same batch or from rows already projected, and
nothing else; so where batches begin never changes a row."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from services.core import envelope
from services.projector import trace_rows


def trace(n: int, kind: str, parent: str | None = None, *, job: str = "j1") -> envelope.Envelope:
    data = {"agent_name": "a", "attempt": 1, "payload": {"n": n}}
    if parent is not None:
        data["parent"] = parent
    return envelope.make(f"trace.{kind}", source="runner/t", job_id=job, id=f"{job}:1:trace:{n}", data=data)


def nothing_projected(calls: list[list[str]]) -> trace_rows.Lookup:
    async def lookup(ids: Collection[str]) -> Mapping[str, int]:
        calls.append(list(ids))
        return {}

    return lookup


def parents(rows: list[trace_rows.Row]) -> list[tuple[int, int | None, str]]:
    return [(row[0], row[6], row[7]) for row in rows]


async def test_a_parent_earlier_in_the_batch_is_resolved_and_non_traces_are_skipped() -> None:
    job = envelope.make("job.started", source="runner/t", job_id="j1", data={})
    batch = [
        (10, trace(1, "task_start")),
        (11, job),
        (12, trace(2, "llm_usage", "j1:1:trace:1")),
        (13, trace(3, "tool_call", "j1:1:trace:1")),
    ]
    calls: list[list[str]] = []
    rows = await trace_rows.trace_rows(batch, nothing_projected(calls))
    assert parents(rows) == [(10, None, "j1:1:trace:1"), (12, 10, "j1:1:trace:2"), (13, 10, "j1:1:trace:3")]
    assert calls == [["j1:1:trace:1"]]


async def test_a_parent_projected_before_the_batch_comes_from_the_lookup() -> None:
    async def lookup(ids: Collection[str]) -> Mapping[str, int]:
        return {"j1:1:trace:1": 4} if "j1:1:trace:1" in ids else {}

    rows = await trace_rows.trace_rows([(20, trace(2, "llm_usage", "j1:1:trace:1"))], lookup)
    assert parents(rows) == [(20, 4, "j1:1:trace:2")]


async def test_a_parent_not_before_the_child_or_not_in_the_log_gives_null() -> None:
    # the child comes first in the log: its parent is not resolved from the later event
    batch = [
        (30, trace(2, "llm_usage", "j1:1:trace:1")),
        (31, trace(1, "task_start")),
        (32, trace(3, "llm_usage", "j9:1:trace:1")),
    ]
    rows = await trace_rows.trace_rows(batch, nothing_projected([]))
    assert parents(rows) == [(30, None, "j1:1:trace:2"), (31, None, "j1:1:trace:1"), (32, None, "j1:1:trace:3")]


async def test_the_same_rows_whatever_the_batch_boundaries() -> None:
    events = [
        (40, trace(1, "task_start")),
        (41, trace(2, "llm_usage", "j1:1:trace:1")),
        (42, trace(1, "task_start", job="j2")),
        (43, trace(3, "tool_call", "j1:1:trace:1")),
        (44, trace(2, "task_complete", "j2:1:trace:1", job="j2")),
        # the same event id logged twice (past the duplicate window): the first row is the parent
        (45, trace(1, "task_start")),
        (46, trace(4, "tool_result", "j1:1:trace:1")),
    ]

    async def project(size: int) -> list[trace_rows.Row]:
        table: dict[str, int] = {}
        out: list[trace_rows.Row] = []
        for i in range(0, len(events), size):

            async def lookup(ids: Collection[str]) -> Mapping[str, int]:
                return {k: table[k] for k in ids if k in table}

            rows = await trace_rows.trace_rows(events[i : i + size], lookup)
            for row in rows:
                table.setdefault(row[7], row[0])
            out += rows
        return out

    whole = await project(len(events))
    assert [row[6] for row in whole] == [None, 40, None, 40, 42, None, 40]
    for size in (1, 2, 3):
        assert await project(size) == whole, size

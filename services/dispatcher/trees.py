"""Open-job bookkeeping per pipeline root in the `trees` KV bucket (compare-and-set).

The open set makes every update idempotent: a redelivered outcome removes a job that is
already gone and adds children that are already there. The root is final when the set is empty.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import nats.js.errors
import orjson
from nats.js.kv import KeyValue

from services.core import errors

State = dict[str, Any]


def new_state(pipeline: str, correlation_id: str) -> State:
    return {
        "pipeline": pipeline,
        "correlation_id": correlation_id,
        "open": [],
        "jobs": {},
        "failed": None,
        "result": None,
    }


def add_children(state: State, children: list[tuple[str, str, str, str, str]]) -> None:
    for job_id, parent, plugin, command, step_id in children:
        if job_id not in state["jobs"]:
            state["jobs"][job_id] = {
                "job_id": job_id,
                "parent_job_id": parent,
                "plugin": plugin,
                "command": command,
                "step_id": step_id,
                "status": "queued",
            }
            state["open"].append(job_id)


def close_job(state: State, job_id: str, status: str) -> None:
    if job_id in state["open"]:
        state["open"].remove(job_id)
    if job_id in state["jobs"]:
        state["jobs"][job_id]["status"] = status


def fail(state: State, step_id: str, error: str) -> None:
    if state["failed"] is None:
        state["failed"] = {"step_id": step_id, "error": error}


def tree(state: State) -> list[dict[str, Any]]:
    return list(state["jobs"].values())


class Cache:
    """The last (revision, state) this dispatcher wrote per root: an update can go straight to the
    compare-and-set without reading first. A stale entry just fails the CAS and is re-read."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self.entries: dict[str, tuple[int, State]] = {}

    def get(self, root: str) -> tuple[int, State] | None:
        return self.entries.get(root)

    def put(self, root: str, revision: int, state: State) -> None:
        if len(self.entries) >= self.size:
            self.entries.pop(next(iter(self.entries)))
        self.entries[root] = (revision, state)


async def update(
    kv: KeyValue, root: str, mutate: Callable[[State | None], State], cache: Cache | None = None
) -> tuple[State | None, State]:
    """Apply `mutate` with compare-and-set; returns (before, after)."""
    cached = cache.get(root) if cache is not None else None
    revision: int | None
    for _ in range(100):
        if cached is not None:
            revision, before = cached[0], copy.deepcopy(cached[1])
            cached = None
        else:
            try:
                entry = await kv.get(root)
                before, revision = orjson.loads(entry.value or b"{}"), entry.revision
            except nats.js.errors.KeyNotFoundError:
                before, revision = None, 0
        after = mutate(copy.deepcopy(before))
        try:
            if revision:
                written = await kv.update(root, orjson.dumps(after), last=revision)
            else:
                written = await kv.create(root, orjson.dumps(after))
        except nats.js.errors.KeyWrongLastSequenceError:
            continue
        if cache is not None:
            cache.put(root, int(written), after)
        return before, after
    raise errors.TransientError(f"tree {root}: too many concurrent updates")

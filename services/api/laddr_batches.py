"""Laddr: POST /api/agents/{agent_name}/batch, POST /api/batches/{batch_id}/add-tasks,
GET /api/batches/{batch_id}, GET /api/batches.

A batch is a set of agent jobs with its own id (services/core/batches.py). Each task is a normal
agent run (its own job id, retries, traces, GET /api/jobs/{id}), submitted on the caller's
authority like any other agent job; then the API records the membership as one
`evt.batch.<id>.tasks_added` event, which the projector turns into `batches` + `batch_members`
rows. Submits come first: should the API die in between, the jobs run unlisted, rather than a
batch listing jobs that never existed. A task's `task_id` and `trace_id` are its job id (traces
are keyed by job id; /api/responses/{task_id}/resolved and /ws/batches take it as it is).
Both POSTs honour `Idempotency-Key`: the job ids and the event id derive from the key's id, so a
retried request re-submits nothing new.

Status and progress are computed from the member jobs' rows (`batches.progress`; the reading and
the shapes are in services/api/laddr_batch_views.py): `submitted`,
`running`, then `completed` (every task succeeded) or `failed`. `outputs` always keeps Laddr's
per-job dict `{results: {<job_id>: {status, response, metadata}}, summary}`, also after a
`wait: true` (Laddr then overwrites it with a list and loses the summary).

`wait: true` waits for all the request's tasks at once (one sync slot for the whole request, 429
when none is free), up to `timeout` seconds overall (a Headrace extension, default 300 = Laddr's
budget for *one* task, at most 600), and answers `results: [{task_id, response}]` in task order
(`response` null for a task still running then) with the status computed at that moment.

Decisions where Laddr does not check: an unknown agent (in the path or as add-tasks'
`agent_name`) is 404 "agent ... not found" (Laddr publishes to a queue nobody reads). Status
conventions for the dialect layer (helper A's mapping): invalid bodies raise `errors.BadRequest`
with `field=` (→ 422 like FastAPI); an unknown batch raises `errors.NotFound("Batch not found")`;
adding to a finished batch raises `errors.BadRequest("Cannot add tasks to batch with status: <s>",
laddr_status=400)`, which must stay a **400** (Laddr's HTTPException), not become a 422.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from services.api import auth, bodies, idempotency, laddr_common, pipelines, state, submit
from services.api import laddr_batch_views as batch_views
from services.api.jobs import fresh_job
from services.core import agents as agents_mod
from services.core import batches, envelope, errors, job_waits, subjects

routes = web.RouteTableDef()

#: tasks in one request: their ids must fit one event far below NATS's max payload
MAX_TASKS = 1000
DEFAULT_WAIT_S = 300.0
MAX_WAIT_S = 600.0
#: submits (and waits) in flight at once for one request
CONCURRENCY = 64
#: `running` and `submitted` batches take more tasks (Laddr's rule)
OPEN = frozenset({"running", "submitted"})

LIST_SQL = f"""
SELECT {", ".join(batches.BATCH_COLUMNS)} FROM batches ORDER BY created_at DESC, batch_id DESC LIMIT $1 OFFSET $2
"""


# --- request bodies ---------------------------------------------------------------------------------


def _tasks(body: dict[str, Any]) -> list[dict[str, Any]]:
    if "tasks" not in body:
        raise errors.BadRequest("'tasks' is required", field="tasks")
    tasks = body["tasks"]
    if not isinstance(tasks, list):
        raise errors.BadRequest("'tasks' must be a list of objects", field="tasks")
    if not all(isinstance(t, dict) for t in tasks):
        raise errors.BadRequest("every entry of 'tasks' must be an object", field="tasks")
    if len(tasks) > MAX_TASKS:
        raise errors.BadRequest(f"at most {MAX_TASKS} tasks per request", field="tasks", max_tasks=MAX_TASKS)
    return tasks


def _flag(body: dict[str, Any], field: str) -> bool:
    value = body.get(field, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise errors.BadRequest(f"'{field}' must be a boolean", field=field)
    return value


def _timeout(body: dict[str, Any]) -> float:
    value = body.get("timeout")
    if value is None:
        return DEFAULT_WAIT_S
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_WAIT_S:
        raise errors.BadRequest(f"'timeout' must be a number of seconds between 0 and {MAX_WAIT_S:g}", field="timeout")
    return float(value)


def _name(body: dict[str, Any], field: str, *, required: bool) -> str | None:
    value = body.get(field)
    if value is None:
        if required:
            raise errors.BadRequest(f"'{field}' is required", field=field)
        return None
    if not isinstance(value, str) or not value:
        raise errors.BadRequest(f"'{field}' must be a non-empty string", field=field)
    return value


def _batch_id(value: str) -> str:
    try:
        subjects.batch_event(value, batches.SHORT_TYPE)
    except ValueError:
        raise errors.BadRequest(
            "'batch_id' must be at most 256 characters without '.', '*', '>' or whitespace", field="batch_id"
        ) from None
    return value


# --- submitting tasks -------------------------------------------------------------------------------


async def _bounded(calls: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
    """Run the calls, at most CONCURRENCY at once; their results in order."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(call: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await call()

    return list(await asyncio.gather(*(one(c) for c in calls)))


async def add_tasks(
    st: state.ApiState,
    principal: Any,
    batch_id: str,
    agent: str,
    tasks: list[dict[str, Any]],
    *,
    batch_agent: str,
    seed: str,
    first_index: int,
) -> list[str]:
    """Submit one agent job per task, then record them as members of `batch_id`; returns their job ids.
    The ids derive from `seed` (the Idempotency-Key's id, else a new one), so a retried request
    re-submits the same jobs and the same membership event, which JetStream drops as duplicates.
    Each job's context carries `batch_id`, `batch_index` (`first_index` + its place: the count the API
    read; the read model numbers members in the log's order, the same unless two requests add to one
    batch at the same moment) and `trace_id` (its job id): the agent runtime writes them as Laddr's
    `trace_id` and `_batch_*` keys into its traces."""
    job_ids = [agents_mod.child_job_id(f"{seed}:task:{i}") for i in range(len(tasks))]
    event = batches.tasks_added(
        batch_id,
        agent_name=batch_agent,
        tasks=list(zip(job_ids, [agent] * len(tasks), tasks, strict=True)),
        source=st.source,
        submitted_by="laddr",
        principal=principal.name,
        event_id=f"{batch_id}:tasks:{seed}",
    )
    limit = st.bus.nc.max_payload
    if limit and len(envelope.encode(event)) > limit:  # refused before any job exists
        raise errors.PayloadTooLarge(
            f"the tasks exceed the event bus's max_payload ({limit} bytes); send fewer", max_payload=limit
        )
    authority = auth.authority(principal)
    await _bounded(
        [
            functools.partial(
                submit.submit_job,
                st,
                plugin=agents_mod.AGENT,
                command=agent,
                payload=task,
                submitted_by="batch",
                job_id=job_id,
                context={"batch_id": batch_id, "batch_index": first_index + i, "trace_id": job_id},
                authority=authority,
            )
            for i, (job_id, task) in enumerate(zip(job_ids, tasks, strict=True))
        ]
    )
    await st.bus.publish(subjects.batch_event(batch_id, batches.SHORT_TYPE), event)
    return job_ids


@contextlib.asynccontextmanager
async def sync_slot(request: web.Request, st: state.ApiState, wanted: bool) -> AsyncIterator[None]:
    """One of the API's waiting slots for a `wait: true` request, taken before any task is submitted
    (429 when none is free: nothing was created then)."""
    if not wanted:
        yield
        return
    slots = request.app[pipelines.SYNC_SLOTS]
    if slots.locked():
        raise errors.TooManyRequests(f"at most {st.config.api.max_concurrent_sync} waiting requests at once")
    async with slots:
        yield


async def wait_results(
    st: state.ApiState, job_ids: list[str], timeout_s: float
) -> tuple[list[dict[str, Any]], dict[str, batches.Row]]:
    """Wait for every job at once (bounded by `timeout_s` overall; the caller holds a `sync_slot`);
    Laddr's `results` and the jobs as seen."""
    deadline = time.monotonic() + timeout_s

    def waiter(job_id: str) -> Callable[[], Awaitable[Any]]:
        # one deadline for the whole request, also for the waits that queue for the concurrency bound
        return lambda: job_waits.wait_final(st.bus, job_id, timeout_s=max(0.0, deadline - time.monotonic()))

    await _bounded([waiter(job_id) for job_id in job_ids])
    # the rows as the waits left them (folded from the log where the projection lags), unfinished ones too
    rows = await _bounded([functools.partial(fresh_job, st, job_id) for job_id in job_ids])
    jobs = {job_id: row for job_id, row in zip(job_ids, rows, strict=True) if row is not None}
    results = [
        {"task_id": job_id, "response": await batch_views.response(st, job_id, jobs.get(job_id))} for job_id in job_ids
    ]
    return results, jobs


# --- routes -----------------------------------------------------------------------------------------


@routes.post("/api/agents/{agent_name}/batch")
async def create_batch(request: web.Request) -> web.Response:
    principal = auth.require(request, "jobs:rw")
    st = state.of(request)
    name = request.match_info["agent_name"]
    body = await bodies.json_object(request, required=True)
    tasks = _tasks(body)
    wait = _flag(body, "wait")
    timeout_s = _timeout(body)
    given = _name(body, "batch_id", required=False)
    if given is not None:
        _batch_id(given)
    laddr_common.agent(st, name)  # 404 unknown, 409 misconfigured

    async def create(seed: str) -> tuple[int, dict[str, Any]]:
        batch_id = given or seed
        existing = await batch_views.load(st, batch_id)
        batch_agent = existing[0]["agent_name"] if existing is not None else name
        async with sync_slot(request, st, wait):
            job_ids = await add_tasks(
                st,
                principal,
                batch_id,
                name,
                tasks,
                batch_agent=batch_agent,
                seed=seed,
                first_index=len(existing[1]) if existing is not None else 0,
            )
            out: dict[str, Any] = {
                "batch_id": batch_id,
                "agent_name": name,
                "status": "submitted",
                "task_count": len(tasks),
                "task_ids": job_ids,
                "job_ids": job_ids,
                "trace_ids": job_ids,
            }
            if wait:
                results, jobs = await wait_results(st, job_ids, timeout_s)
                out["status"] = batches.progress([{"job_id": job_id} for job_id in job_ids], jobs)[0]
                out["results"] = results
        return 200, out

    return await idempotency.respond(request, principal, create)


@routes.post("/api/batches/{batch_id}/add-tasks")
async def add_to_batch(request: web.Request) -> web.Response:
    principal = auth.require(request, "jobs:rw")
    st = state.of(request)
    batch_id = request.match_info["batch_id"]
    body = await bodies.json_object(request, required=True)
    agent = _name(body, "agent_name", required=True)
    assert agent is not None
    tasks = _tasks(body)
    wait = _flag(body, "wait")
    timeout_s = _timeout(body)
    found = await batch_views.load(st, batch_id)
    if found is None:
        raise errors.NotFound("Batch not found", batch_id=batch_id)
    row, members = found
    status, _, _ = batches.progress(members, await batch_views.member_jobs(st, members, fresh=True))
    if status not in OPEN:
        raise errors.BadRequest(f"Cannot add tasks to batch with status: {status}", laddr_status=400)
    laddr_common.agent(st, agent)

    async def create(seed: str) -> tuple[int, dict[str, Any]]:
        async with sync_slot(request, st, wait):
            job_ids = await add_tasks(
                st,
                principal,
                batch_id,
                agent,
                tasks,
                batch_agent=row["agent_name"],
                seed=seed,
                first_index=len(members),
            )
            total = len(members) + len(job_ids)
            out: dict[str, Any] = {
                "batch_id": batch_id,
                "status": status,
                "added_job_ids": job_ids,
                "added_trace_ids": job_ids,
                "added_task_ids": job_ids,
                "total_tasks": total,
                "total_job_ids": total,
            }
            if wait:
                out["results"], _ = await wait_results(st, job_ids, timeout_s)
        return 200, out

    return await idempotency.respond(request, principal, create)


@routes.get("/api/batches/{batch_id}")
async def get_batch(request: web.Request) -> web.Response:
    auth.require(request, "jobs:ro")
    st = state.of(request)
    batch_id = request.match_info["batch_id"]
    found = await batch_views.load(st, batch_id)
    if found is None:
        raise errors.NotFound("Batch not found", batch_id=batch_id)
    row, members = found
    jobs = await batch_views.member_jobs(st, members, fresh=True)
    summary = batch_views.summary_view(row, members, jobs)
    created_at, completed_at = summary.pop("created_at"), summary.pop("completed_at")
    body = {
        **summary,
        "trace_ids": summary["job_ids"],
        "inputs": {"tasks": [m["task"] for m in members]},
        "outputs": await batch_views.outputs(st, members, jobs),
        "created_at": created_at,
        "completed_at": completed_at,
    }
    return web.json_response(body, dumps=state.dumps)


@routes.get("/api/batches")
async def list_batches(request: web.Request) -> web.Response:
    auth.require(request, "jobs:ro")
    st = state.of(request)
    limit, offset = bodies.page(request)
    rows = [dict(r) for r in await st.pool.fetch(LIST_SQL, limit, offset)]
    members: dict[str, list[batches.Row]] = {r["batch_id"]: [] for r in rows}
    if rows:
        for m in await st.pool.fetch(batch_views.MEMBERS_SQL, list(members)):
            members[m["batch_id"]].append(dict(m))
    everyone = [m for group in members.values() for m in group]
    jobs = await batch_views.member_jobs(st, everyone, fresh=False)
    listed = [batch_views.summary_view(r, members[r["batch_id"]], jobs) for r in rows]
    return web.json_response({"batches": listed, "limit": limit, "offset": offset}, dumps=state.dumps)

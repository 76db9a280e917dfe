"""POST /pipeline/{name} (plugin:rw) and GET /job/{job_id}/tree (jobs:ro).

Asynchronous pipelines answer 202 at once. Synchronous ones wait — on the root job's events,
never by polling — up to the pipeline's timeout: 200 with the result and the flattened tree,
or 202 with `timeout_exceeded`. At most `api.max_concurrent_sync` waits at once (429 beyond).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from services.api import auth, bodies, idempotency, jobs, state, views
from services.core import envelope, errors, subjects

routes = web.RouteTableDef()

SYNC_SLOTS = web.AppKey("sync_slots", asyncio.Semaphore)
FINAL_ROOT = ("job.succeeded", "job.failed")


def _pipeline(st: state.ApiState, name: str) -> Any:
    pipeline = st.config.routes.get(name) if st.config.routes else None
    if pipeline is None:
        raise errors.NotFound(f"pipeline {name!r} not found", pipeline=name)
    return pipeline


async def _tree_with_results(st: state.ApiState, tree: list[dict[str, Any]]) -> list[dict[str, Any]]:
    async def one(node: dict[str, Any]) -> dict[str, Any]:
        done = await st.bus.last_message(subjects.EVENTS, subjects.job_event(node["job_id"], "succeeded"))
        return {**node, "result": done[1].data.get("result") if done else None}

    return list(await asyncio.gather(*(one(node) for node in tree)))


@routes.post("/pipeline/{name}")
async def run_pipeline(request: web.Request) -> web.Response:
    principal = auth.require(request, "plugin:rw")
    st = state.of(request)
    pipeline = _pipeline(st, request.match_info["name"])
    body = await bodies.json_object(request, extras_ignored=True, first_document=True)
    payload = bodies.payload(body)
    synchronous = pipeline.synchronous and not bodies.bool_param(request, "async")
    if synchronous and len(pipeline.entries) > 1:
        raise errors.BadRequest(
            f"pipeline {pipeline.name!r} fans out into {len(pipeline.entries)} entry steps; "
            "a synchronous run needs one: use ?async=true"
        )
    slots = request.app[SYNC_SLOTS]
    if synchronous and slots.locked():
        raise errors.TooManyRequests(f"at most {st.config.api.max_concurrent_sync} synchronous pipeline runs at once")

    async def create(root_id: str) -> tuple[int, dict[str, Any]]:
        cmd = envelope.make(
            "pipeline.run",
            source=st.source,
            job_id=root_id,
            id=f"{root_id}:run",
            correlation_id=root_id,
            data={
                "pipeline": pipeline.name,
                "payload": payload,
                "submitted_by": "api",
                "authority": auth.authority(principal).to_data(),
            },
        )
        if not synchronous:
            await st.bus.publish(subjects.pipeline_command(root_id), cmd)
            # Ductile's keys (plugin "pipeline" is a label, command the pipeline's name) and ours
            return 202, {
                "job_id": root_id,
                "status": "queued",
                "plugin": "pipeline",
                "command": pipeline.name,
                "pipeline": pipeline.name,
            }
        async with slots:
            return await _run_synchronously(st, cmd, pipeline.timeout_s)

    return await idempotency.respond(request, principal, create)


async def _run_synchronously(
    st: state.ApiState, cmd: envelope.Envelope, timeout_s: float
) -> tuple[int, dict[str, Any]]:
    root_id = cmd.job_id
    assert root_id is not None
    started = time.monotonic()
    final: asyncio.Future[envelope.Envelope] = asyncio.get_running_loop().create_future()

    async def on_event(msg: Any) -> None:
        env = envelope.decode(msg.data)
        if env.type in FINAL_ROOT and not final.done():
            final.set_result(env)

    # listen before publishing, so the outcome cannot slip past
    sub = await st.bus.nc.subscribe(subjects.job_events(root_id), cb=on_event)
    try:
        await st.bus.publish(subjects.pipeline_command(root_id), cmd)
        try:
            env = await asyncio.wait_for(final, timeout=timeout_s)
        except TimeoutError:
            return 202, {
                "job_id": root_id,
                "status": "running",
                "timeout_exceeded": True,
                "message": "Pipeline still running after timeout.",
                "timeout_secs": timeout_s,
            }
    finally:
        await sub.unsubscribe()
    status = "succeeded" if env.type == "job.succeeded" else "failed"
    body: dict[str, Any] = {
        "job_id": root_id,
        "status": status,
        "duration_ms": int((time.monotonic() - started) * 1000),
        "result": env.data.get("result"),
        "tree": await _tree_with_results(st, env.data.get("tree") or []),
    }
    if status == "failed":
        body["error"] = env.data.get("error")
    return 200, body


TREE_SQL = """
SELECT job_id, plugin, command, status, submitted_by, payload, result, last_error, attempt, parent_job_id,
       correlation_id, pipeline, step_id, created_at, started_at, completed_at, last_seq
FROM jobs WHERE correlation_id = $1 ORDER BY created_at, job_id
"""


@routes.get("/job/{job_id}/tree")
async def job_tree(request: web.Request) -> web.Response:
    principal = auth.require(request, "jobs:ro", narrow=("jobs:tree:ro",))
    st = state.of(request)
    job_id = request.match_info["job_id"]
    row = await jobs.load_job(st, job_id)
    if row is None:  # Ductile answers an unknown id with an empty tree (handleGetJobTree), not a 404
        return web.json_response([], dumps=state.dumps)
    rows = [dict(r) for r in await st.pool.fetch(TREE_SQL, row.get("correlation_id") or job_id)] or [row]
    children: dict[str | None, list[dict[str, Any]]] = {}
    for r in rows:
        children.setdefault(r.get("parent_job_id"), []).append(r)
    out: list[dict[str, Any]] = []
    stack = [row["job_id"]]
    by_id = {r["job_id"]: r for r in rows}
    while stack:
        current = stack.pop(0)
        node = by_id.get(current, row if current == row["job_id"] else None)
        if node is None:
            continue
        out.append(auth.results_for(principal, views.tree_node(node)))
        stack.extend(child["job_id"] for child in children.get(current, []))
    return web.json_response(out, dumps=state.dumps)

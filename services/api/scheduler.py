"""GET /scheduler/jobs (jobs:ro): every configured schedule with its spec, command, next fire
and last fire, with Ductile's keys (`schedule_id`, `mode`, `status`, `next_run_at`) beside ours. The config says what is scheduled; the event log (the last decision on
`evt.schedule.<plugin>.<id>`) says what has fired — the same state the dispatcher's scheduler reads.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from services.api import auth, state
from services.core import envelope, subjects
from services.core import schedules as specs

routes = web.RouteTableDef()


def _label(moment: Any) -> str | None:
    return envelope.rfc3339(moment) if moment is not None else None


async def describe(st: state.ApiState, schedule: specs.Schedule) -> dict[str, Any]:
    last = await st.bus.last_message(subjects.EVENTS, subjects.schedule_event(schedule.plugin, schedule.id))
    current = specs.State.from_event(last[0], last[1].type, last[1].data) if last else None
    out = schedule.describe()
    enabled = st.config.plugin(schedule.plugin).enabled
    next_fire_at = _label(specs.next_fire(schedule, current, envelope.now()))
    out.update(
        # Ductile's keys (handleSchedulerJobs); Ductile lists enabled plugins only, we list all and say which
        schedule_id=schedule.id,
        mode=schedule.kind,
        status="scheduled" if enabled else "disabled",
        next_run_at=next_fire_at,
        kind=schedule.kind,
        spec=schedule.spec,
        enabled=enabled,
        next_fire_at=next_fire_at,
        last_fire_at=_label(current.last_fired_at if current else None),
        last_job_id=current.last_job_id if current else None,
        last_decision=last[1].type if last else None,
        last_decision_at=last[1].time if last else None,
        armed_at=_label(current.anchor if current else None),
    )
    return out


@routes.get("/scheduler/jobs")
async def list_schedules(request: web.Request) -> web.Response:
    auth.require(request, "jobs:ro", narrow=("jobs:status:ro",))
    st = state.of(request)
    jobs = list(await asyncio.gather(*(describe(st, s) for s in st.config.schedules)))
    return web.json_response({"jobs": jobs, "count": len(jobs)}, dumps=state.dumps)

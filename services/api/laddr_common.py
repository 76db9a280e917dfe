"""What the Laddr resources share: statuses in Laddr's words, agent lookup, submitting agent runs,
token usage summed over a job tree from the `traces` table, and a job's outputs (offloaded ones
resolved). Called by the `laddr_*` resource modules only.
"""

from __future__ import annotations

from typing import Any

from services.api import jobs, state, submit, views
from services.core import agents as agents_mod
from services.core import errors, jobstate, offload, scopes, subjects

#: read-model status → Laddr status (a failed or timed-out attempt is final only with job.dead,
#: but the window before the dispatcher's retry decision is milliseconds; rejected jobs stay failed)
STATUS = {"queued": "queued", "running": "running", "succeeded": "completed", "failed": "failed",
          "timed_out": "failed", "dead": "failed", "skipped": "skipped", "cancelled": "cancelled"}

TOKEN_USAGE_SQL = """
WITH RECURSIVE tree AS (
    SELECT $1::text AS job_id
    UNION
    SELECT j.job_id FROM jobs j JOIN tree t ON j.parent_job_id = t.job_id
)
SELECT coalesce(payload->>'model', 'unknown') AS model,
       coalesce(sum((payload->>'prompt_tokens')::bigint), 0) AS prompt_tokens,
       coalesce(sum((payload->>'completion_tokens')::bigint), 0) AS completion_tokens,
       coalesce(sum((payload->>'total_tokens')::bigint), 0) AS total_tokens
FROM traces WHERE event_type = 'llm_usage' AND job_id IN (SELECT job_id FROM tree)
GROUP BY 1 ORDER BY 1
"""


async def fresh_job(st: state.ApiState, job_id: str) -> dict[str, Any] | None:
    """The job row, folded from the event log when the projection has not reached its outcome yet
    (a chat or a wait that saw the final event must not read an older row right after)."""
    row = await jobs.load_job(st, job_id)
    if row is None or row["status"] in jobstate.FINAL_STATUSES:
        return row
    folded = await jobs.fold_events(st, job_id)
    return folded if folded is not None and folded["last_seq"] > row.get("last_seq", 0) else row


def status(row: dict[str, Any]) -> str:
    return STATUS.get(row["status"], row["status"])


def pipeline_name(row: dict[str, Any]) -> str:
    """The Laddr name of what a job ran: the agent, the prompt, the pipeline, else `<plugin>.<command>`."""
    plugin, command = row["plugin"], row["command"]
    if plugin in (agents_mod.AGENT, "pipeline"):
        return str(command)
    if plugin == agents_mod.PROMPT:
        return str((row.get("payload") or {}).get("prompt_name") or command)
    return f"{plugin}.{command}"


def agent(st: state.ApiState, name: str) -> agents_mod.AgentSpec:
    """The configured agent: 404 when there is none, 409 when its tools cannot run."""
    spec = agents_mod.specs(st.config).get(name)
    if spec is None:
        raise errors.NotFound(f"agent {name!r} not found", agent=name,
                              agents=sorted(agents_mod.specs(st.config)))
    problems = agents_mod.problems(spec, st.catalog, st.config)
    if problems:
        raise errors.Conflict(f"agent {name!r} is misconfigured: " + "; ".join(problems), agent=name)
    return spec


async def submit_agent(st: state.ApiState, name: str, inputs: dict[str, Any], *, job_id: str, submitted_by: str,
                       authority: scopes.Authority, extra: dict[str, Any] | None = None) -> str:
    """An agent run on behalf of `authority`: each tool call it makes is checked against it."""
    return await submit.submit_job(st, plugin=agents_mod.AGENT, command=name, payload=inputs,
                                   submitted_by=submitted_by, job_id=job_id, extra=extra, authority=authority)


async def token_usage(st: state.ApiState, job_id: str) -> dict[str, Any]:
    """Tokens of every llm_usage trace of the job and its descendants, in total and by model."""
    rows = await st.pool.fetch(TOKEN_USAGE_SQL, job_id)
    by_model = {r["model"]: {"prompt_tokens": int(r["prompt_tokens"]), "completion_tokens": int(r["completion_tokens"]),
                             "total_tokens": int(r["total_tokens"])} for r in rows}
    total = {key: sum(m[key] for m in by_model.values()) for key in ("prompt_tokens", "completion_tokens",
                                                                       "total_tokens")}
    return {**total, "by_model": by_model}


async def resolve(st: state.ApiState, job_id: str, stored: Any) -> Any:
    """A stored result with an offloaded one fetched back (502 when its object is gone)."""
    try:
        return await offload.resolve(st.bus, stored)
    except offload.OffloadMissing as exc:
        raise errors.BadGateway(exc.message, job_id=job_id, pointer=stored.get("pointer")) from exc


def inner(response: Any) -> Any:
    """The plugin's `result` inside a protocol response."""
    return response.get("result") if isinstance(response, dict) else response


async def outputs(st: state.ApiState, row: dict[str, Any]) -> Any:
    """What the job produced (the protocol response's `result`), None until it succeeded."""
    if row["status"] != "succeeded":
        return None
    return inner(await resolve(st, row["job_id"], row.get("result")))


async def original_job_id(st: state.ApiState, row: dict[str, Any]) -> str | None:
    """The job a replay was made from (kept on its submit command)."""
    if row.get("submitted_by") != "replay":
        return None
    found = await st.bus.last_message(subjects.COMMANDS, subjects.job_command(row["job_id"], "submit"))
    return found[1].data.get("original_job_id") if found else None


async def job_view(st: state.ApiState, row: dict[str, Any]) -> dict[str, Any]:
    """GET /api/jobs/{id}."""
    out = {
        "job_id": row["job_id"],
        "status": status(row),
        "pipeline_name": pipeline_name(row),
        "inputs": row.get("payload") or {},
        "outputs": await outputs(st, row),
        "error": row.get("last_error") if row["status"] != "succeeded" else None,
        "created_at": views.timestamp(row.get("created_at")),
        "completed_at": views.timestamp(row.get("completed_at")),
        "token_usage": await token_usage(st, row["job_id"]),
        "plugin": row["plugin"],
        "command": row["command"],
        "attempt": row.get("attempt"),
        "parent_job_id": row.get("parent_job_id"),
    }
    original = await original_job_id(st, row)
    if original:
        out["original_job_id"] = original
    return out


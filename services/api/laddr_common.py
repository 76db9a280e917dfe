"""What the Laddr resources share: statuses in Laddr's words, agent lookup, submitting agent runs,
token usage summed over a job tree from the `traces` table (Laddr's `by_model` list), a job's
outputs as Laddr stores them (the agent's answer itself, offloaded ones resolved), and listing
pages. Called by the `laddr_*` resource modules only.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.api import bodies, state, submit, views
from services.core import agents as agents_mod
from services.core import errors, jobstate, offload, scopes, subjects

#: read-model status → Laddr status (a failed or timed-out attempt is final only with job.dead,
#: but the window before the dispatcher's retry decision is milliseconds; rejected jobs stay failed)
STATUS = {
    "queued": "queued",
    "running": "running",
    "succeeded": "completed",
    "failed": "failed",
    "timed_out": "failed",
    "dead": "failed",
    "skipped": "skipped",
    "cancelled": "cancelled",
}


#: per (provider, model), in the order first seen; a missing or zero total counts as prompt + completion,
#: per call (as Laddr's get_token_usage)
def tokens(key: str) -> str:
    """SQL for a token count of an llm_usage payload: its number, NULL when missing or not a number
    (a value that cannot be counted is not counted, rather than failing the whole sum)."""
    return f"(CASE WHEN jsonb_typeof(payload->'{key}') = 'number' THEN trunc((payload->>'{key}')::numeric) END)"


TOKEN_USAGE_SQL = f"""
WITH RECURSIVE tree AS (
    SELECT $1::text AS job_id
    UNION
    SELECT j.job_id FROM jobs j JOIN tree t ON j.parent_job_id = t.job_id
), calls AS (
    SELECT id, payload->>'provider' AS provider, payload->>'model' AS model,
           coalesce({tokens("prompt_tokens")}, 0) AS pt,
           coalesce({tokens("completion_tokens")}, 0) AS ct,
           {tokens("total_tokens")} AS tt
    FROM traces WHERE event_type = 'llm_usage' AND job_id IN (SELECT job_id FROM tree)
)
SELECT provider, model, sum(pt) AS prompt_tokens, sum(ct) AS completion_tokens,
       sum(coalesce(nullif(tt, 0), pt + ct)) AS total_tokens, count(*) AS calls, min(id) AS first_id
FROM calls GROUP BY provider, model ORDER BY first_id
"""
USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


def status(row: dict[str, Any]) -> str:
    stored: str = row["status"]
    return STATUS.get(stored, stored)


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
        raise errors.NotFound(f"agent {name!r} not found", agent=name, agents=sorted(agents_mod.specs(st.config)))
    problems = agents_mod.problems(spec, st.catalog, st.config)
    if problems:
        raise errors.Conflict(f"agent {name!r} is misconfigured: " + "; ".join(problems), agent=name)
    return spec


async def submit_agent(
    st: state.ApiState,
    name: str,
    inputs: dict[str, Any],
    *,
    job_id: str,
    submitted_by: str,
    authority: scopes.Authority,
    extra: dict[str, Any] | None = None,
) -> str:
    """An agent run on behalf of `authority`: each tool call it makes is checked against it."""
    return await submit.submit_job(
        st,
        plugin=agents_mod.AGENT,
        command=name,
        payload=inputs,
        submitted_by=submitted_by,
        job_id=job_id,
        extra=extra,
        authority=authority,
    )


async def token_usage(st: state.ApiState, job_id: str) -> dict[str, Any]:
    """Tokens of every llm_usage trace of the job and its descendants, in total and by (provider, model)."""
    rows = await st.pool.fetch(TOKEN_USAGE_SQL, job_id)
    by_model = [
        {"provider": r["provider"], "model": r["model"], **{k: int(r[k]) for k in USAGE_KEYS}, "calls": int(r["calls"])}
        for r in rows
    ]
    return {**{k: sum(m[k] for m in by_model) for k in USAGE_KEYS}, "by_model": by_model}


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def lax_bool(value: Any, field: str) -> bool:
    """A body boolean with Laddr's (Pydantic's lax) coercion: true/false, 0/1, "true"/"false"/"yes"/"no"..."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise errors.BadRequest(f"'{field}' must be a boolean", field=field)


def lax_number(value: Any, field: str) -> float:
    """A body number of seconds: a JSON number or a numeric string ("30"), as Laddr's lax int accepts."""
    if isinstance(value, bool):
        raise errors.BadRequest(f"'{field}' must be a number of seconds", field=field)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise errors.BadRequest(f"'{field}' must be a number of seconds", field=field)


def seconds(request: web.Request, body: dict[str, Any], *, default: float, maximum: float) -> float:
    """`timeout` from the body (wins) or the query string; at most `maximum`, a negative one is 0."""
    where: dict[str, Any]  # the one detail naming where the value came from (field= or parameter=)
    if "timeout" in body and body["timeout"] is not None:
        value, where = lax_number(body["timeout"], "timeout"), {"field": "timeout"}
    else:
        raw = request.query.get("timeout")
        if raw is None or raw == "":
            return default
        try:
            value = float(raw)
        except ValueError:
            raise errors.BadRequest(
                "query parameter 'timeout' must be a number of seconds", parameter="timeout"
            ) from None
        where = {"parameter": "timeout"}
    if value != value or value > maximum:  # NaN, or beyond what one request may hold a sync slot for
        raise errors.BadRequest(f"'timeout' must be at most {maximum:g} seconds", **where)
    return max(value, 0.0)


def required_inputs(body: dict[str, Any], known: frozenset[str]) -> dict[str, Any]:
    """The body's `inputs`: required and an object, as in Laddr's request models (400 naming `inputs`;
    a body with unknown keys and no `inputs` is told where its input goes)."""
    inputs = bodies.payload(body, "inputs", known=known)
    if body.get("inputs") is None:
        raise errors.BadRequest("'inputs' (a JSON object) is required", field="inputs")
    return inputs


def page(request: web.Request) -> tuple[int, int]:
    """(limit, offset) of a Laddr listing. A negative offset skips nothing (Laddr accepts one without
    complaint); a limit outside 1..1000 or a non-integer is a 400 naming the parameter."""
    limit = bodies.int_param(request, "limit", default=50, minimum=1, maximum=1000)
    offset = bodies.int_param(request, "offset", default=0, minimum=-bodies.MAX_OFFSET, maximum=bodies.MAX_OFFSET)
    return limit, max(offset, 0)


async def resolve(st: state.ApiState, job_id: str, stored: Any) -> Any:
    """A stored result with an offloaded one fetched back (502 when its object is gone)."""
    try:
        return await offload.resolve(st.bus, stored)
    except offload.OffloadMissing as exc:
        raise errors.BadGateway(exc.message, job_id=job_id, pointer=stored.get("pointer")) from exc


def inner(response: Any) -> Any:
    """The plugin's `result` inside a protocol response."""
    return response.get("result") if isinstance(response, dict) else response


def is_run(row: dict[str, Any]) -> bool:
    """An agent run or a prompt: its result is `{"result": <answer>, ...details}`."""
    return row["plugin"] in agents_mod.RESERVED


def error_text(row: dict[str, Any]) -> str | None:
    return row.get("last_error") if row["status"] != "succeeded" else None


async def result(st: state.ApiState, row: dict[str, Any]) -> Any:
    """The whole result of a succeeded job (the protocol response's `result`, offloaded ones fetched), else None."""
    if row["status"] != "succeeded":
        return None
    return inner(await resolve(st, row["job_id"], row.get("result")))


def answer(row: dict[str, Any], whole: Any) -> Any:
    """What Laddr stores as a job's outputs: an agent's (or prompt's) answer itself, a plugin's result."""
    if is_run(row) and isinstance(whole, dict) and "result" in whole:
        return whole["result"]
    return whole


def details(row: dict[str, Any], whole: Any) -> dict[str, Any] | None:
    """The rest of an agent run's result (agent, iterations, usage ...) beside its answer."""
    if is_run(row) and isinstance(whole, dict) and "result" in whole:
        return {k: v for k, v in whole.items() if k != "result"}
    return None


def outputs(row: dict[str, Any], whole: Any) -> Any:
    """GET /api/jobs/{id} `outputs` (`whole` = `result()`): the answer once succeeded, `{"error": ...}` once
    failed for good (Laddr keeps the error there too), None while it runs."""
    if row["status"] == "succeeded":
        return answer(row, whole)
    if row["status"] == "cancelled" and is_run(row):
        # Laddr's agent loop answers a cancel with this result (agent_runtime.py _autonomous_run_loop)
        return {"status": "canceled", "result": "Execution canceled by user."}
    if row["status"] in jobstate.FINAL_STATUSES and row.get("last_error"):
        return {"error": row["last_error"]}
    return None


async def original_job_id(st: state.ApiState, row: dict[str, Any]) -> str | None:
    """The job a replay was made from (kept on its submit command)."""
    if row.get("submitted_by") != "replay":
        return None
    found = await st.bus.last_message(subjects.COMMANDS, subjects.job_command(row["job_id"], "submit"))
    return found[1].data.get("original_job_id") if found else None


async def job_view(st: state.ApiState, row: dict[str, Any]) -> dict[str, Any]:
    """GET /api/jobs/{id}. A prompt's `inputs` are the inputs its first agent got, as in Laddr."""
    whole = await result(st, row)
    payload = row.get("payload") or {}
    inputs = payload.get("inputs") or {} if row["plugin"] == agents_mod.PROMPT else payload
    out: dict[str, Any] = {
        "job_id": row["job_id"],
        "status": status(row),
        "pipeline_name": pipeline_name(row),
        "inputs": inputs,
        "outputs": outputs(row, whole),
        "error": error_text(row),
        "created_at": views.timestamp(row.get("created_at")),
        "completed_at": views.timestamp(row.get("completed_at")),
        "token_usage": await token_usage(st, row["job_id"]),
        "plugin": row["plugin"],
        "command": row["command"],
        "attempt": row.get("attempt"),
        "parent_job_id": row.get("parent_job_id"),
    }
    extra = details(row, whole)
    if extra is not None:
        out["details"] = extra
    original = await original_job_id(st, row)
    if original:
        out["original_job_id"] = original
    return out

"""The Laddr dialect described for OpenAPI (GET /api/openapi.json, services/api/api_docs.py): the
shapes Headrace answers on the Laddr 0.9.6 routes (laddr-api.md, where it speaks; Laddr's code
where it is silent; supersets of both) as JSON Schemas, and one `Operation` row per route, `/`,
every `/api/*` and every `/ws/*`. `openapi_builder.document` keeps the rows of the mounted routes.

Objects allow extra keys: every answer is a superset of what a Laddr client reads. WebSockets,
which OpenAPI cannot describe, are GET operations marked `x-websocket` whose `x-messages` list the
schemas of the messages the server sends.
"""

from __future__ import annotations

from typing import Any

from services.api import laddr_agents, laddr_jobs, openapi_builder
from services.api.openapi_builder import (
    ANY,
    BOOLEAN,
    INTEGER,
    JSON_OBJECT,
    JSON_SCHEMAS,
    OBJECT,
    STRING,
    TIMESTAMP,
    Operation,
    Param,
    Resp,
    Schema,
    body_obj,
    nullable,
    obj,
    ref,
)

DESCRIPTION = (
    "**The Laddr dialect** (`/`, `/api/*`, `/ws/*`): the Laddr 0.9.6 agent API as Headrace serves it; "
    "Laddr clients work unchanged. Authenticate with `X-API-Key` (when present it is the only credential "
    "read) or `Authorization: Bearer`; the WebSockets also take `?api_key=` (or `?token=`). Answers are "
    "Laddr's: 200 for every success, errors as `{detail, error, code}`, FastAPI's 422 for invalid input."
)
KEY_HEADER, KEY_QUERY = "APIKeyHeader", "APIKeyQuery"
BEARER = openapi_builder.BEARER
SECURITY_SCHEMES = {
    KEY_HEADER: {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "Laddr's key header (on /api/* and /ws/* only); when present, only it is read",
    },
    BEARER: openapi_builder.TOKEN_SCHEMES[BEARER],
    KEY_QUERY: {"type": "apiKey", "in": "query", "name": "api_key", "description": "WebSockets only (browsers)"},
    openapi_builder.TOKEN_QUERY: openapi_builder.TOKEN_SCHEMES[openapi_builder.TOKEN_QUERY],
}
HTTP_AUTH = (KEY_HEADER, BEARER)
WS_AUTH = (KEY_QUERY, KEY_HEADER, BEARER, openapi_builder.TOKEN_QUERY)
TAGS = [
    {"name": "system", "description": "Service information and health (both dialects)"},
    {"name": "jobs", "description": "Laddr: agent runs submitted as jobs, and their replays"},
    {"name": "prompts", "description": "Laddr: prompt executions, one agent or a sequential chain"},
    {"name": "agents", "description": "Laddr: configured agents, chat and tools"},
    {"name": "batches", "description": "Laddr: sets of agent tasks with one id and progress"},
    {"name": "traces", "description": "Laddr: trace events of agent runs, and metrics"},
    {"name": "responses", "description": "Laddr: agent replies, offloaded ones resolved"},
    {"name": "logs", "description": "Laddr: container logs (Laddr's Docker deployment; not available)"},
    {"name": "websockets", "description": "Laddr: live traces (GET with Upgrade: websocket)"},
    {"name": "docs", "description": "The gateway's OpenAPI documents"},
]

# --- shapes ------------------------------------------------------------------------------------------

NAME: Schema = {"type": "string", "minLength": 1}
#: an id that becomes a NATS subject token (services/core/subjects.py)
TOKEN: Schema = {"type": "string", "pattern": "^[^.*> \\t\\r\\n\\x00]{1,256}$"}


def _any_case(word: str) -> str:
    return "".join(f"[{c.upper()}{c}]" if c.isalpha() else c for c in word)


#: a body boolean with Laddr's (Pydantic's lax) coercion: true/false, 0/1, or one of its words (or null: the default)
LAX_BOOL: Schema = {
    "anyOf": [
        BOOLEAN,
        {"enum": [0, 1]},
        {
            "type": "string",
            "pattern": "^ *("
            + "|".join(_any_case(w) for w in ("1", "true", "yes", "on", "0", "false", "no", "off"))
            + ") *$",
        },
        {"type": "null"},
    ]
}
STATUS_WORDS = "Laddr's words: completed, failed, cancelled/canceled, running, queued (see README)"
JOB_STATUS: Schema = {"type": "string", "description": STATUS_WORDS}
ID: Schema = {"type": "string", "description": "An id (UUID text)"}
MODEL_USAGE = obj(
    {
        "provider": nullable(STRING),
        "model": STRING,
        "prompt_tokens": INTEGER,
        "completion_tokens": INTEGER,
        "total_tokens": INTEGER,
        "calls": INTEGER,
    }
)
TOKEN_USAGE = obj(
    {
        "prompt_tokens": INTEGER,
        "completion_tokens": INTEGER,
        "total_tokens": INTEGER,
        "by_model": {"type": "array", "items": ref("ModelUsage")},
    },
    required=["prompt_tokens", "completion_tokens", "total_tokens"],
)
TRACE = obj(
    {
        "id": INTEGER,
        "job_id": STRING,
        "agent_name": nullable(STRING),
        "event_type": STRING,
        "parent_id": nullable(INTEGER),
        "payload": OBJECT,
        "timestamp": TIMESTAMP,
    },
    required=["id", "job_id", "agent_name", "event_type", "payload", "timestamp"],
    description="A trace row; `id` is its position in the event log, `parent_id` the trace that caused it",
)
SPAN: Schema = obj(
    {
        "id": INTEGER,
        "name": STRING,
        "type": {"enum": ["agent", "tool", "llm", "reasoning", "event"]},
        "start_time": TIMESTAMP,
        "agent": STRING,
        "event_type": STRING,
        "input": ANY,
        "output": ANY,
        "metadata": obj(
            {"duration_ms": nullable(INTEGER), "tokens": nullable(INTEGER), "cost": ANY},
            description="duration_ms, tokens, cost, then every payload key",
        ),
        "children": {"type": "array", "items": ref("Span")},
        "job_id": STRING,
        "parent_id": nullable(INTEGER),
    },
    required=["id", "name", "type", "start_time", "agent", "event_type", "input", "output", "metadata", "children"],
    description="Laddr's span of one trace, with its children (the traces whose parent_id it is)",
)
ERROR = obj(
    {"detail": ANY, "error": STRING, "code": STRING},
    description="Laddr's `detail` (its text per route), plus Headrace's `error` and `code`",
)
VALIDATION = obj(
    {
        "detail": {
            "type": "array",
            "items": obj({"type": STRING, "loc": {"type": "array"}, "msg": STRING, "input": ANY}),
        },
        "error": STRING,
        "code": STRING,
    },
    required=["detail"],
    description="FastAPI's 422 shape",
)

SCHEMAS: dict[str, Schema] = {
    **JSON_SCHEMAS,
    "Error": ERROR,
    "ValidationError": VALIDATION,
    "Root": obj(
        {
            "service": STRING,
            "version": STRING,
            "status": STRING,
            "dashboard": STRING,
            "docs": {"type": "string", "description": "The Swagger UI over this document: /docs"},
            "name": STRING,
            "description": STRING,
            "uptime_seconds": INTEGER,
            "discovery": obj(
                {"health": STRING, "skills": STRING, "plugins": STRING, "openapi": STRING, "ai_plugin": STRING},
                required=["health", "skills", "plugins", "openapi", "ai_plugin"],
            ),
        },
        required=["service", "version", "status", "docs", "name", "uptime_seconds", "discovery"],
        description="Laddr's keys (service, version, status, dashboard, docs) and Ductile's discovery index",
    ),
    "Health": obj(
        {
            "status": {"enum": ["ok", "degraded"]},
            "version": STRING,
            "components": obj(
                {
                    "database": STRING,
                    "storage": STRING,
                    "message_bus": STRING,
                    "tracing": obj({"enabled": BOOLEAN, "backend": STRING}),
                },
                description="Laddr's labels of the backends",
            ),
            "checks": obj({}, description="Headrace's checks of each dependency"),
        },
        required=["status", "version", "components"],
    ),
    "ModelUsage": MODEL_USAGE,
    "TokenUsage": TOKEN_USAGE,
    "SubmitJob": body_obj(
        {
            "pipeline_name": NAME,
            "inputs": JSON_OBJECT,
            "wait": {**LAX_BOOL, "default": False, "description": "answer with the finished job"},
            "timeout": {
                "type": "number",
                "maximum": laddr_jobs.MAX_WAIT_S,
                "description": "seconds a wait lasts at most",
            },
        },
        required=["pipeline_name", "inputs"],
    ),
    "JobQueued": obj(
        {"job_id": ID, "status": {"const": "queued"}, "created_at": TIMESTAMP},
        required=["job_id", "status", "created_at"],
    ),
    "JobFinished": obj(
        {
            "job_id": ID,
            "status": JOB_STATUS,
            "result": ANY,
            "error": nullable(STRING),
            "duration_ms": nullable(INTEGER),
            "agent": STRING,
            "created_at": TIMESTAMP,
        },
        required=["job_id", "status", "result", "error"],
    ),
    "JobSummary": obj(
        {
            "job_id": ID,
            "pipeline_name": STRING,
            "status": JOB_STATUS,
            "created_at": TIMESTAMP,
            "completed_at": nullable(TIMESTAMP),
        },
        required=["job_id", "pipeline_name", "status", "created_at"],
    ),
    "JobList": {
        "oneOf": [
            {"type": "array", "items": ref("JobSummary"), "description": "the reference's bare array (default)"},
            obj(
                {"jobs": {"type": "array", "items": ref("JobSummary")}, "limit": INTEGER, "offset": INTEGER},
                required=["jobs"],
                description="Laddr 0.9.6's object (a deployment option)",
            ),
        ]
    },
    "Job": obj(
        {
            "job_id": ID,
            "status": JOB_STATUS,
            "pipeline_name": STRING,
            "inputs": OBJECT,
            "outputs": ANY,
            "error": nullable(STRING),
            "created_at": TIMESTAMP,
            "completed_at": nullable(TIMESTAMP),
            "token_usage": ref("TokenUsage"),
        },
        required=["job_id", "status", "pipeline_name", "inputs", "outputs", "error", "created_at", "token_usage"],
    ),
    "ReplayRequest": obj(
        {
            "reexecute": {**LAX_BOOL, "default": False},
            "request": LAX_BOOL,
            "job_id": {"description": "ignored: the path names the job"},
        },
        description="No body or `{}`: the stored result; reexecute or request true: run it again",
    ),
    "Replay": {
        "oneOf": [
            obj(
                {
                    "job_id": ID,
                    "status": JOB_STATUS,
                    "result": ANY,
                    "error": nullable(STRING),
                    "pipeline_name": STRING,
                    "created_at": TIMESTAMP,
                    "completed_at": nullable(TIMESTAMP),
                    "replayed": BOOLEAN,
                    "original_job_id": STRING,
                },
                required=["job_id", "status", "result"],
            ),
            obj(
                {"status": {"const": "error"}, "error": STRING},
                required=["status", "error"],
                description="Laddr's answer for an unknown job (HTTP 200)",
            ),
        ]
    },
    "SubmitPrompt": body_obj(
        {
            "prompt_name": NAME,
            "inputs": JSON_OBJECT,
            "mode": {"enum": ["single", "sequential"], "default": "single"},
            "agents": nullable({"type": "array", "items": NAME}),
        },
        required=["prompt_name", "inputs"],
    ),
    "PromptAccepted": obj(
        {
            "prompt_id": ID,
            "status": STRING,
            "agent": STRING,
            "mode": STRING,
            "agents": nullable({"type": "array", "items": STRING}),
            "prompt_name": STRING,
        },
        required=["prompt_id", "status", "agent", "mode", "agents"],
    ),
    "PromptSummary": obj(
        {
            "prompt_id": ID,
            "status": JOB_STATUS,
            "prompt_name": STRING,
            "created_at": TIMESTAMP,
            "completed_at": nullable(TIMESTAMP),
        },
        required=["prompt_id", "status", "prompt_name"],
    ),
    "PromptList": obj(
        {"prompts": {"type": "array", "items": ref("PromptSummary")}, "limit": INTEGER, "offset": INTEGER},
        required=["prompts", "limit"],
    ),
    "Prompt": obj(
        {
            "prompt_id": ID,
            "status": JOB_STATUS,
            "prompt_name": STRING,
            "inputs": OBJECT,
            "outputs": ANY,
            "error": nullable(STRING),
            "created_at": TIMESTAMP,
            "completed_at": nullable(TIMESTAMP),
            "token_usage": ref("TokenUsage"),
        },
        required=["prompt_id", "status", "prompt_name", "inputs", "outputs", "error", "token_usage"],
    ),
    "CancelPrompt": obj({"ok": BOOLEAN, "prompt_id": STRING, "status": STRING}, required=["ok", "prompt_id", "status"]),
    "Agent": obj(
        {
            "name": STRING,
            "role": STRING,
            "goal": STRING,
            "status": STRING,
            "tools": {"type": "array", "items": STRING},
            "last_seen": nullable(TIMESTAMP),
            "trace_count": INTEGER,
            "last_executed": nullable(TIMESTAMP),
        },
        required=["name", "role", "goal", "status", "tools"],
    ),
    "AgentList": obj({"agents": {"type": "array", "items": ref("Agent")}}, required=["agents"]),
    "AgentTools": obj(
        {
            "agent": STRING,
            "tools": {
                "type": "array",
                "items": obj(
                    {"name": STRING, "description": STRING, "parameters": OBJECT},
                    required=["name", "description", "parameters"],
                ),
            },
        },
        required=["agent", "tools"],
    ),
    "ChatRequest": body_obj(
        {
            "message": STRING,
            "wait": {**LAX_BOOL, "default": True},
            "timeout": {
                "type": "number",
                "maximum": laddr_agents.MAX_CHAT_TIMEOUT_S,
                "default": laddr_agents.DEFAULT_CHAT_TIMEOUT_S,
            },
        },
        required=["message"],
    ),
    "Chat": obj(
        {
            "task_id": ID,
            "status": {"enum": ["completed", "submitted", "timeout"]},
            "result": ANY,
            "response": obj({"status": STRING, "result": ANY, "job_id": STRING, "prompt_id": STRING}),
            "agent": STRING,
            "message": STRING,
        },
        required=["task_id", "status"],
        description="completed: `result` (the reference) and `response` (Laddr's code) together",
    ),
    "BatchRequest": body_obj(
        {
            "tasks": {"type": "array", "items": JSON_OBJECT, "maxItems": 1000},
            "wait": {**nullable(BOOLEAN), "default": False},
            "timeout": {"type": "number", "minimum": 0, "maximum": 600},
            "batch_id": nullable(TOKEN),
        },
        required=["tasks"],
    ),
    "AddTasksRequest": body_obj(
        {
            "agent_name": NAME,
            "tasks": {"type": "array", "items": JSON_OBJECT, "maxItems": 1000},
            "wait": {**nullable(BOOLEAN), "default": False},
            "timeout": {"type": "number", "minimum": 0, "maximum": 600},
        },
        required=["agent_name", "tasks"],
    ),
    "BatchAccepted": obj(
        {
            "batch_id": ID,
            "agent_name": STRING,
            "status": STRING,
            "task_count": INTEGER,
            "task_ids": {"type": "array", "items": STRING},
            "job_ids": {"type": "array", "items": STRING},
            "trace_ids": {"type": "array", "items": STRING},
            "results": ANY,
        },
        required=["batch_id", "agent_name", "status", "task_count", "task_ids", "job_ids"],
    ),
    "TasksAdded": obj(
        {
            "batch_id": ID,
            "status": STRING,
            "added_job_ids": {"type": "array", "items": STRING},
            "added_trace_ids": {"type": "array", "items": STRING},
            "added_task_ids": {"type": "array", "items": STRING},
            "total_tasks": INTEGER,
            "total_job_ids": INTEGER,
            "results": ANY,
        },
        required=["batch_id", "status", "added_job_ids", "total_tasks"],
    ),
    "Batch": obj(
        {
            "batch_id": ID,
            "agent_name": STRING,
            "status": {"enum": ["running", "submitted", "completed", "failed"]},
            "task_count": INTEGER,
            "job_ids": {"type": "array", "items": STRING},
            "task_ids": {"type": "array", "items": STRING},
            "inputs": OBJECT,
            "outputs": nullable(obj({"results": OBJECT, "summary": OBJECT})),
            "created_at": TIMESTAMP,
            "completed_at": nullable(TIMESTAMP),
        },
        required=["batch_id", "agent_name", "status", "task_count"],
    ),
    "BatchList": obj({"batches": {"type": "array", "items": ref("Batch")}, "limit": INTEGER}, required=["batches"]),
    "Resolved": obj(
        {
            "task_id": STRING,
            "offloaded": BOOLEAN,
            "pointer": nullable(obj({"bucket": STRING, "key": STRING, "size_bytes": INTEGER})),
            "data": ANY,
        },
        required=["task_id", "offloaded", "pointer", "data"],
    ),
    "Trace": TRACE,
    "TraceList": obj({"traces": {"type": "array", "items": ref("Trace")}}, required=["traces"]),
    "GroupedTraces": obj(
        {
            "grouped_traces": {
                "type": "array",
                "items": obj(
                    {
                        "job_id": STRING,
                        "trace_count": INTEGER,
                        "agents": {"type": "array", "items": STRING},
                        "start_time": TIMESTAMP,
                        "end_time": TIMESTAMP,
                        "traces": {"type": "array", "items": ref("Trace")},
                    }
                ),
            }
        },
        required=["grouped_traces"],
    ),
    "Metrics": obj(
        {
            "total_jobs": INTEGER,
            "completed_jobs": INTEGER,
            "failed_jobs": INTEGER,
            "active_jobs": INTEGER,
            "avg_latency_ms": INTEGER,
            "active_agents_count": INTEGER,
            "cache_hits": INTEGER,
            "tool_calls": INTEGER,
            "total_tokens": INTEGER,
            "timestamp": TIMESTAMP,
        },
        required=["total_jobs", "avg_latency_ms", "active_agents_count", "cache_hits", "tool_calls", "timestamp"],
    ),
    "Span": SPAN,
    "WsTrace": obj(
        {
            "type": {"const": "trace"},
            "data": obj(
                {"job_id": STRING, "agent_name": nullable(STRING), "event_type": STRING, "timestamp": TIMESTAMP}
            ),
        },
        required=["type", "data"],
        description="/ws/events: one trace (each trace is sent once)",
    ),
    "WsBatch": obj(
        {"type": {"const": "batch"}, "events": {"type": "array", "items": ref("WsTrace")}},
        required=["type", "events"],
        description="/ws/events: traces held by the throttle, together",
    ),
    "WsTraces": obj(
        {
            "type": {"const": "traces"},
            "data": obj({"spans": {"type": "array", "items": ref("Span")}, "count": INTEGER}),
        },
        required=["type", "data"],
        description="/ws/prompts: the traces so far, then each increment",
    ),
    "WsComplete": obj(
        {
            "type": {"const": "complete"},
            "data": obj(
                {
                    "status": JOB_STATUS,
                    "outputs": ANY,
                    "error": nullable(STRING),
                    "spans": {"type": "array", "items": ref("Span")},
                }
            ),
        },
        required=["type", "data"],
        description="/ws/prompts: the final status and the whole tree; the server then closes (1000)",
    ),
    "WsBatchTraces": obj(
        {
            "type": {"const": "traces"},
            "data": obj({"spans": {"type": "array", "items": ref("Trace")}, "count": INTEGER}),
        },
        required=["type", "data"],
        description="/ws/batches: raw trace rows of the batch's jobs",
    ),
    "WsError": obj({"type": {"const": "error"}, "data": obj({"error": STRING})}, required=["type", "data"]),
}

# --- operations ----------------------------------------------------------------------------------------


def json(name: str, description: str = "Successful Response") -> Resp:
    return Resp(description, ref(name))


UNAUTHORIZED = Resp("Invalid or missing API key", ref("Error"))
FORBIDDEN = Resp("The token lacks the route's scope", ref("Error"))
INVALID = Resp("Validation error (FastAPI's shape)", ref("ValidationError"))
UNAVAILABLE = Resp("The event bus or the read-model database is unavailable; retry shortly", ref("Error"))


BAD_REQUEST = Resp(
    "A refusal that names no field or parameter (a value beyond the API's limits, an Idempotency-Key clash)",
    ref("Error"),
)


def guarded(ok: Resp, *, status: str = "200", **more: Resp) -> dict[str, Resp]:
    """`ok`, then `more`; 400 and 422 (every request passes the input gate), 401, 403, 503."""
    return {
        status: ok,
        "400": BAD_REQUEST,
        "422": INVALID,
        **{code.removeprefix("r"): resp for code, resp in more.items()},
        "401": UNAUTHORIZED,
        "403": FORBIDDEN,
        "503": UNAVAILABLE,
    }


def not_found(text: str) -> Resp:
    return Resp(f'404 `{{"detail": "{text}"}}`', ref("Error"))


LIMIT = Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}, "How many to return")
#: Laddr accepts a negative offset (it skips nothing)
OFFSET = Param(
    "offset",
    "query",
    {"type": "integer", "minimum": -1_000_000, "maximum": 1_000_000, "default": 0},
    "How many to skip",
)
SKIP = Param(
    "offset", "query", {"type": "integer", "minimum": 0, "maximum": 1_000_000, "default": 0}, "How many to skip"
)
WS_KEY = Param("api_key", "query", description="The API key (WebSockets; also `X-API-Key` or Bearer)")
WS_RESPONSES = {
    "101": Resp("Switching Protocols: the server sends the `x-messages` as JSON text frames"),
    "403": Resp("Invalid or missing API key, or the token lacks the scope: refused before the upgrade"),
    "426": Resp("A plain HTTP request (no Upgrade: websocket)", ref("Error")),
    "429": Resp("The token holds api.limits.sse_per_token streams already", ref("Error")),
}


def http(method: str, path: str, summary: str, tag: str, responses: dict[str, Resp], **kw: Any) -> Operation:
    kw.setdefault("security", HTTP_AUTH)
    return Operation(method, path, summary, tag, responses, **kw)


def ws(path: str, summary: str, description: str, *messages: str, params: tuple[Param, ...] = ()) -> Operation:
    return Operation(
        "GET",
        path,
        summary,
        "websockets",
        WS_RESPONSES,
        description=description,
        params=(*params, WS_KEY),
        security=WS_AUTH,
        websocket=True,
        messages=[ref(m) for m in messages],
    )


OPERATIONS: list[Operation] = [
    http("GET", "/", "Service information", "system", {"200": json("Root")}, security=()),
    http(
        "GET",
        "/api/health",
        "Health: Laddr's component labels and Headrace's checks",
        "system",
        {"200": json("Health", "Always 200; `status` says ok or degraded")},
        security=(),
    ),
    http(
        "POST",
        "/api/jobs",
        "Submit an agent run (or a pipeline) as a job",
        "jobs",
        guarded(
            Resp(
                "Queued (the reference), or the finished job with `wait`",
                {"oneOf": [ref("JobQueued"), ref("JobFinished")]},
            ),
            r404=not_found("Agent not found"),
            r422=INVALID,
        ),
        params=(
            Param("wait", "query", BOOLEAN, "Answer when the job is finished"),
            Param(
                "timeout",
                "query",
                {"type": "number", "maximum": laddr_jobs.MAX_WAIT_S},
                "Seconds a wait lasts at most (default 300)",
            ),
        ),
        body=ref("SubmitJob"),
        body_required=True,
    ),
    http(
        "GET",
        "/api/jobs",
        "Recent jobs, newest first",
        "jobs",
        guarded(json("JobList"), r422=INVALID),
        params=(
            LIMIT,
            OFFSET,
            Param(
                "format",
                "query",
                {"enum": list(laddr_jobs.LIST_SHAPES)},
                "array: the reference's bare array; object: Laddr 0.9.6's (default: api.laddr.jobs_list)",
            ),
        ),
    ),
    http(
        "GET",
        "/api/jobs/{job_id}",
        "One job: inputs, outputs, error, token usage",
        "jobs",
        guarded(json("Job"), r404=not_found("Job not found")),
    ),
    http(
        "POST",
        "/api/jobs/{job_id}/replay",
        "Replay a job: its stored result, or run it again",
        "jobs",
        guarded(json("Replay"), r422=INVALID),
        body=ref("ReplayRequest"),
    ),
    http(
        "POST",
        "/api/prompts",
        "Run a prompt: one agent, or a sequential chain",
        "prompts",
        guarded(json("PromptAccepted"), r404=not_found("Agent not found"), r422=INVALID),
        body=ref("SubmitPrompt"),
        body_required=True,
    ),
    http(
        "GET",
        "/api/prompts",
        "Recent prompt executions, newest first",
        "prompts",
        guarded(json("PromptList"), r422=INVALID),
        params=(LIMIT, OFFSET),
    ),
    http(
        "GET",
        "/api/prompts/{prompt_id}",
        "One prompt execution",
        "prompts",
        guarded(json("Prompt"), r404=not_found("Prompt execution not found")),
    ),
    http(
        "POST",
        "/api/prompts/{prompt_id}/cancel",
        "Cancel a prompt and its running agent",
        "prompts",
        guarded(json("CancelPrompt", "Always 200, even for an unknown id (as Laddr)")),
    ),
    http("GET", "/api/agents", "The configured agents", "agents", guarded(json("AgentList"))),
    http(
        "GET",
        "/api/agents/{agent_name}/chat",
        "Chat with an agent",
        "agents",
        guarded(
            json("Chat", "completed, submitted or timeout (all 200)"), r404=not_found("Agent not found"), r422=INVALID
        ),
        description="The message comes as a JSON body on the GET (Laddr's code) or as query parameters "
        "(the reference); a valid body wins.",
        params=(
            Param("message", "query"),
            Param("wait", "query", {"type": "boolean", "default": True}),
            Param(
                "timeout",
                "query",
                {
                    "type": "number",
                    "maximum": laddr_agents.MAX_CHAT_TIMEOUT_S,
                    "default": laddr_agents.DEFAULT_CHAT_TIMEOUT_S,
                },
            ),
        ),
        body=ref("ChatRequest"),
    ),
    http(
        "GET",
        "/api/agents/{agent_name}/tools",
        "An agent's tools with their parameter schemas",
        "agents",
        guarded(json("AgentTools"), r404=not_found("Agent not found")),
    ),
    http(
        "POST",
        "/api/agents/{agent_name}/batch",
        "Submit a batch of tasks to an agent",
        "batches",
        guarded(json("BatchAccepted"), r404=not_found("Agent not found"), r422=INVALID),
        body=ref("BatchRequest"),
        body_required=True,
    ),
    http(
        "POST",
        "/api/batches/{batch_id}/add-tasks",
        "Add tasks to a running or submitted batch",
        "batches",
        guarded(
            json("TasksAdded"),
            r400=Resp("Cannot add tasks to batch with status: <s>", ref("Error")),
            r404=not_found("Batch not found"),
            r422=INVALID,
        ),
        body=ref("AddTasksRequest"),
        body_required=True,
    ),
    http(
        "GET",
        "/api/batches/{batch_id}",
        "One batch with its results",
        "batches",
        guarded(json("Batch"), r404=not_found("Batch not found")),
    ),
    http(
        "GET",
        "/api/batches",
        "Recent batches, newest first",
        "batches",
        guarded(json("BatchList"), r422=INVALID),
        params=(LIMIT, SKIP),
    ),
    http(
        "GET",
        "/api/responses/{task_id}/resolved",
        "An agent's reply, an offloaded one fetched back",
        "responses",
        guarded(
            json("Resolved"),
            r404=not_found("Response not found or expired"),
            r502=Resp("Failed to fetch offloaded artifact", ref("Error")),
        ),
    ),
    http(
        "GET",
        "/api/traces",
        "Trace events: newest first, or one job's oldest first",
        "traces",
        guarded(json("TraceList"), r422=INVALID),
        params=(
            Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}),
            Param("job_id", "query", description="One job's traces, oldest first (limit only if given)"),
            Param("agent_name", "query", description="Laddr's filter name"),
            Param("agent", "query", description="The reference's filter name"),
        ),
    ),
    http(
        "GET",
        "/api/traces/grouped",
        "Recent traces grouped by job",
        "traces",
        guarded(json("GroupedTraces"), r422=INVALID),
        params=(LIMIT,),
    ),
    http(
        "GET",
        "/api/traces/{trace_id}",
        "One trace",
        "traces",
        guarded(json("Trace"), r404=not_found("Trace not found")),
    ),
    http("GET", "/api/metrics", "Job, agent, tool and token totals", "traces", guarded(json("Metrics"))),
    http(
        "GET",
        "/api/logs/containers",
        "Container list (Laddr's Docker deployment)",
        "logs",
        guarded(Resp("Not served", ref("Error")), status="503", r501=Resp("Not implemented", ref("Error"))),
    ),
    http(
        "GET",
        "/api/logs/containers/{container_name}",
        "One container's log (Laddr's Docker deployment)",
        "logs",
        guarded(Resp("Not served", ref("Error")), status="503", r501=Resp("Not implemented", ref("Error"))),
        params=(
            Param("tail", "query", {"type": "integer", "default": 100}),
            Param("since", "query"),
            Param("timestamps", "query", {"type": "boolean", "default": True}),
        ),
    ),
    http(
        "GET",
        "/api/openapi.json",
        "This document",
        "docs",
        {"200": Resp("The OpenAPI 3.1 document", OBJECT)},
        security=(),
    ),
    ws(
        "/ws/events",
        "Live traces of every run",
        "Each trace once; the traces of the last 5 s first. Laddr's "
        "throttle: a trace held within 100 ms of the last message goes out with the next ones as a batch.",
        "WsTrace",
        "WsBatch",
    ),
    ws(
        "/ws/prompts/{prompt_id}",
        "Live spans of one prompt (or job) tree",
        "First the spans so far, then increments, then `complete` at the final status and a close (1000). "
        "An unknown id gets the empty first message and waits for it.",
        "WsTraces",
        "WsComplete",
        "WsError",
    ),
    ws(
        "/ws/batches/{batch_id}",
        "Live trace rows of one batch's jobs",
        "Raw trace rows, as Laddr.",
        "WsBatchTraces",
        "WsError",
    ),
    ws(
        "/ws/logs/{container_name}",
        "Container log stream (not available)",
        "Sends one error message (no containers to follow) and closes.",
        "WsError",
    ),
]

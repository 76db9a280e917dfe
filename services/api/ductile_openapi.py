"""The Ductile dialect and Headrace's own routes described for OpenAPI (GET /api/openapi.json,
services/api/api_docs.py): one `Operation` row per route, the shapes the handlers answer as JSON
Schemas (shared/spec/ductile-api.md where it speaks, the handlers where it is silent), and the rows of
the routes the config mounts (each webhook, the relay ingress) built from the app's router.

Objects allow extra keys: every answer is a superset of what a Ductile client reads. Errors are
Headrace's `{"error", "code", ...}` with a 4xx naming the problem (the vault routes answer Ductile's bare
`{"error"}`). `GET /openapi.json` itself stays Ductile's plugin-command document (services/api/discovery.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, cast

from aiohttp import web

from services.api import discovery, idempotency, listing, relay, stopwatch, webhooks
from services.api import events as events_mod
from services.api.openapi_builder import (
    ANY,
    BEARER,
    BOOLEAN,
    INTEGER,
    JSON_OBJECT,
    JSON_SCHEMAS,
    OBJECT,
    STRING,
    TIMESTAMP,
    TOKEN_QUERY,
    TOKEN_SCHEMES,
    Operation,
    Param,
    Resp,
    Schema,
    body_obj,
    nullable,
    obj,
    ref,
)
from services.core import relay as relay_mod
from services.core import scopes
from services.core import webhooks as hooks_mod

DESCRIPTION = (
    "**The Ductile dialect** and Headrace's own routes (everything outside `/api/*` and `/ws/*`): plugin "
    "commands, pipelines, jobs, listings, discovery, the live event stream, schedules, operations, "
    "webhooks, the relay ingress and the vault. Authenticate with `Authorization: Bearer <token>` "
    "(`GET /events` also takes `?token=`). Errors are JSON `{error, code, ...}` with a 4xx that names the "
    "problem. `GET /openapi.json` stays Ductile's document of the plugin commands, one path per command "
    "with its `input_schema`."
)
VAULT_ADMIN = "VaultAdmin"
RELAY_SIGNATURE = "RelaySignature"
SECURITY_SCHEMES: dict[str, Any] = {
    BEARER: TOKEN_SCHEMES[BEARER],
    TOKEN_QUERY: TOKEN_SCHEMES[TOKEN_QUERY],
    VAULT_ADMIN: {
        "type": "http",
        "scheme": "bearer",
        "description": "The vault's active `core-admin-token` (header only, `Bearer ` exactly); API tokens are "
        "not accepted",
    },
    RELAY_SIGNATURE: {
        "type": "apiKey",
        "in": "header",
        "name": relay_mod.HEADER_SIGNATURE,
        "description": "The peer's HMAC-SHA256 (hex, `sha256=` optional) of `METHOD\\npath\\ntimestamp\\nbody` "
        "with its shared secret",
    },
}
TAGS = [
    {"name": "discovery", "description": "Ductile: the plugin catalog, skills and the plugin-command documents"},
    {"name": "commands", "description": "Ductile: run one plugin command as a job"},
    {"name": "pipelines", "description": "Ductile: run a configured pipeline, and a job's tree"},
    {"name": "job status", "description": "Ductile: one job, its cancel and its retry"},
    {"name": "listings", "description": "Ductile: jobs and job logs, filtered, newest first"},
    {"name": "events", "description": "Ductile: the live event stream and refused ingest events"},
    {"name": "scheduler", "description": "Ductile: the configured schedules and their last fires"},
    {"name": "operations", "description": "Ductile: analytics, configuration, reload, checks, topology, metrics"},
    {"name": "webhooks", "description": "Ductile: the configured webhooks (the signature authenticates)"},
    {"name": "relay", "description": "Ductile: events relayed by a peer gateway (the signature authenticates)"},
    {"name": "vault", "description": "Ductile: vault management (the vault admin token authenticates)"},
]

# --- shapes ------------------------------------------------------------------------------------------

JOB_STATUS: Schema = {"enum": list(listing.STATUSES), "description": "A job's status"}
STATUS_FILTER: Schema = {
    "enum": [*listing.STATUSES, *listing.STATUS_ALIASES],
    "description": "A status, or an alias (pending: queued, ok: succeeded, error: failed); case is ignored",
}
TEXT_LIST: Schema = {"type": "array", "items": STRING}
NUMBER: Schema = {"type": "number"}


def array(item: Schema) -> Schema:
    return {"type": "array", "items": item}


def counts(description: str) -> Schema:
    return {"type": "object", "additionalProperties": INTEGER, "description": description}


RESULT_NOTE = " (`result` and `last_error` only for a token with a results scope: jobs:result:ro, implied by jobs:ro)"
COMPONENT = obj({"ok": BOOLEAN, "error": STRING}, required=["ok"], description="`error` for an admin token only")
LEADER = obj(
    {
        "held": BOOLEAN,
        "since": nullable(TIMESTAMP),
        "until": nullable(TIMESTAMP),
        "standbys": INTEGER,
        "holder": STRING,
        "standby_sources": TEXT_LIST,
    },
    required=["held", "since", "until", "standbys"],
    description="The role's leader (lease or lock holder) and its standbys; `holder` and `standby_sources` "
    "(instance names) for an admin token (in /healthz) or system:ro (in /system/selfcheck)",
)
LEADERS = nullable(
    obj(
        {"dispatcher": LEADER, "projector": LEADER},
        required=["dispatcher", "projector"],
        description="Headrace's own: who leads the dispatchers and the projectors (README: Leadership); null when "
        "NATS cannot be read",
    )
)
PLUGIN_STATS = obj(
    {
        "total": INTEGER,
        "by_status": counts("jobs created in the window, by status"),
        "success_rate": nullable(NUMBER),
        "duration_ms": obj({"p50": nullable(NUMBER), "p95": nullable(NUMBER)}, required=["p50", "p95"]),
    },
    required=["total", "by_status", "success_rate", "duration_ms"],
)
CHECK = obj(
    {
        "name": STRING,
        "ok": BOOLEAN,
        "severity": {"enum": ["error", "warning"]},
        "detail": STRING,
        "field": STRING,
    },
    required=["name", "ok", "detail"],
)
PLUGIN_COMMAND = obj({"plugin": STRING, "command": STRING}, required=["plugin", "command"])
SIGNAL_OF = obj({"signal": STRING, "command": STRING}, required=["signal", "command"])
PERCENTILES = {"sample_count": INTEGER, "p50_ms": INTEGER, "p95_ms": INTEGER, "p99_ms": INTEGER}

SCHEMAS: dict[str, Schema] = {
    **JSON_SCHEMAS,
    "Problem": obj(
        {"error": STRING, "code": STRING},
        required=["error", "code"],
        description="Headrace's error: the message, a stable code, and details naming the problem "
        "(`field`, `parameter`, `violations`, `allowed`, ...)",
    ),
    "BareError": obj({"error": STRING}, required=["error"], description="Ductile's bare error"),
    "Healthz": obj(
        {
            "status": {"enum": ["ok", "error"]},
            "uptime_seconds": INTEGER,
            "queue_depth": nullable(INTEGER),
            "plugins_loaded": INTEGER,
            "plugins_circuit_open": INTEGER,
            "version": STRING,
            "posture": STRING,
            "components": obj({"nats": COMPONENT, "postgres": COMPONENT}, required=["nats", "postgres"]),
            "leaders": LEADERS,
            "failing": array({"enum": ["nats", "postgres"]}),
            "plugins_broken": INTEGER,
            "config_path": STRING,
            "binary_path": STRING,
            "plugin_errors": array(obj({"path": STRING, "error": STRING}, required=["path", "error"])),
        },
        required=[
            "status",
            "uptime_seconds",
            "queue_depth",
            "plugins_loaded",
            "plugins_circuit_open",
            "version",
            "posture",
            "components",
        ],
        description="`config_path`, `binary_path` and `plugin_errors` only for an admin token (`*`)",
    ),
    "PluginList": obj(
        {
            "plugins": array(
                obj(
                    {"name": STRING, "version": STRING, "description": nullable(STRING), "commands": TEXT_LIST},
                    required=["name", "version", "description", "commands"],
                )
            )
        },
        required=["plugins"],
    ),
    "Plugin": obj(
        {
            "name": STRING,
            "version": STRING,
            "description": nullable(STRING),
            "protocol": {"anyOf": [INTEGER, STRING], "description": "2 (a subprocess), or python (in-process)"},
            "commands": array(
                obj(
                    {
                        "name": STRING,
                        "type": {"type": "string", "description": "read, or write (anything else counts as write)"},
                        "description": nullable(STRING),
                        "input_schema": OBJECT,
                        "output_schema": OBJECT,
                        "idempotent": BOOLEAN,
                        "retry_safe": BOOLEAN,
                        "values": OBJECT,
                    },
                    required=["name", "type", "description", "input_schema", "idempotent", "retry_safe"],
                )
            ),
        },
        required=["name", "version", "description", "protocol", "commands"],
    ),
    "OpenAPIDocument": obj(
        {"openapi": {"const": discovery.OPENAPI_VERSION}, "info": OBJECT, "paths": OBJECT, "components": OBJECT},
        required=["openapi", "info", "paths"],
        description="An OpenAPI 3.1 document: one `post` per plugin command (`/plugin/{plugin}/{command}`)",
    ),
    "SkillList": obj(
        {
            "skills": array(
                obj(
                    {
                        "name": STRING,
                        "kind": {"enum": ["plugin", "pipeline"]},
                        "description": STRING,
                        "endpoint": STRING,
                        "tier": {"enum": ["READ", "WRITE"]},
                        "plugin": STRING,
                        "command": STRING,
                        "pipeline": STRING,
                        "trigger": STRING,
                        "execution_mode": STRING,
                        "timeout_secs": INTEGER,
                    },
                    required=["name", "kind", "endpoint"],
                )
            )
        },
        required=["skills"],
    ),
    "AiPlugin": obj(
        {
            "schema_version": STRING,
            "name_for_human": STRING,
            "name_for_model": STRING,
            "description_for_human": STRING,
            "description_for_model": STRING,
            "auth": obj({"type": STRING}, required=["type"]),
            "api": obj({"type": STRING, "url": STRING}, required=["type", "url"]),
        },
        required=["schema_version", "name_for_human", "name_for_model", "auth", "api"],
    ),
    "WorkRequest": {
        **body_obj(
            {"payload": {**nullable(JSON_OBJECT), "description": "The input (null or absent: {})"}},
            description="`payload` is the work's input. Other keys are ignored next to it and refused without "
            "it; no body, or `{}`, is an empty payload. Anything after the first JSON document is ignored, "
            "as Ductile's decoder does",
        ),
        "anyOf": [{"required": ["payload"]}, {"maxProperties": 0}],
    },
    "CommandQueued": obj(
        {
            "job_id": STRING,
            "status": {"const": "queued"},
            "plugin": STRING,
            "command": STRING,
            "timeout_exceeded": {"const": True},
            "timeout_secs": NUMBER,
        },
        required=["job_id", "status", "plugin", "command"],
        description="Queued; with `?wait=` that ran out first, `timeout_exceeded` and `timeout_secs` too",
    ),
    "CommandFinished": obj(
        {
            "job_id": STRING,
            "status": {"enum": ["succeeded", "failed", "dead", "timed_out", "skipped", "cancelled"]},
            "plugin": STRING,
            "command": STRING,
            "attempt": nullable(INTEGER),
            "duration_ms": INTEGER,
            "result": ANY,
            "error": ANY,
        },
        required=["job_id", "status", "plugin", "command", "duration_ms"],
        description="`?wait=`: the job's final event (an offloaded result fetched back)" + RESULT_NOTE,
    ),
    "PipelineQueued": obj(
        {
            "job_id": STRING,
            "status": {"const": "queued"},
            "plugin": {"const": "pipeline"},
            "command": STRING,
            "pipeline": STRING,
        },
        required=["job_id", "status", "plugin", "command", "pipeline"],
        description="An asynchronous run: the root job (Ductile's `plugin: pipeline`, `command: <name>`)",
    ),
    "PipelineRunning": obj(
        {
            "job_id": STRING,
            "status": {"const": "running"},
            "timeout_exceeded": {"const": True},
            "message": STRING,
            "timeout_secs": NUMBER,
        },
        required=["job_id", "status", "timeout_exceeded", "message"],
        description="A synchronous run still running when the pipeline's timeout ran out",
    ),
    "PipelineFinished": obj(
        {
            "job_id": STRING,
            "status": {"enum": ["succeeded", "failed"]},
            "duration_ms": INTEGER,
            "result": ANY,
            "tree": array(
                obj(
                    {"job_id": STRING, "plugin": STRING, "command": STRING, "status": STRING, "result": ANY},
                    required=["job_id"],
                )
            ),
            "error": ANY,
        },
        required=["job_id", "status", "duration_ms", "result", "tree"],
        description="A synchronous run's end: the root's result and every step (`error` when it failed)",
    ),
    "JobStatus": obj(
        {
            "job_id": STRING,
            "status": JOB_STATUS,
            "plugin": STRING,
            "command": STRING,
            "submitted_by": STRING,
            "attempt": INTEGER,
            "parent_job_id": nullable(STRING),
            "created_at": nullable(TIMESTAMP),
            "started_at": nullable(TIMESTAMP),
            "completed_at": nullable(TIMESTAMP),
            "result": ANY,
            "last_error": nullable(STRING),
        },
        required=["job_id", "status", "plugin", "command", "submitted_by", "attempt", "created_at"],
        description="One job (read your writes: folded from the event log until its row is written)" + RESULT_NOTE,
    ),
    "TreeNode": obj(
        {
            "job_id": STRING,
            "parent_job_id": nullable(STRING),
            "plugin": STRING,
            "command": STRING,
            "status": JOB_STATUS,
            "step_id": nullable(STRING),
            "pipeline": nullable(STRING),
            "result": ANY,
            "last_error": nullable(STRING),
            "started_at": nullable(TIMESTAMP),
            "completed_at": nullable(TIMESTAMP),
        },
        required=["job_id", "parent_job_id", "plugin", "command", "status"],
        description="One job of a tree, parents before children" + RESULT_NOTE,
    ),
    "JobTree": {**array(ref("TreeNode")), "description": "The job and its descendants; `[]` for an unknown id"},
    "CancelAccepted": obj(
        {"job_id": STRING, "status": {"const": "cancelling"}, "previous_status": JOB_STATUS},
        required=["job_id", "status", "previous_status"],
    ),
    "RetryAccepted": obj(
        {"job_id": STRING, "status": {"const": "queued"}, "retry_of": STRING, "plugin": STRING, "command": STRING},
        required=["job_id", "status", "retry_of", "plugin", "command"],
        description="The new job, linked to the original by `retry_of`",
    ),
    "JobPage": obj(
        {
            "jobs": array(
                obj(
                    {
                        "job_id": STRING,
                        "plugin": STRING,
                        "command": STRING,
                        "status": JOB_STATUS,
                        "created_at": TIMESTAMP,
                        "started_at": nullable(TIMESTAMP),
                        "completed_at": nullable(TIMESTAMP),
                        "attempt": INTEGER,
                    },
                    required=["job_id", "plugin", "command", "status", "created_at", "attempt"],
                )
            ),
            "total": INTEGER,
            "total_is_estimate": BOOLEAN,
        },
        required=["jobs", "total", "total_is_estimate"],
        description=f"`total` is exact up to {listing.COUNT_CAP} matches, the planner's estimate beyond",
    ),
    "JobLogPage": obj(
        {
            "logs": array(
                obj(
                    {
                        "job_id": STRING,
                        "log_id": STRING,
                        "plugin": STRING,
                        "command": STRING,
                        "status": JOB_STATUS,
                        "attempt": INTEGER,
                        "submitted_by": STRING,
                        "created_at": TIMESTAMP,
                        "completed_at": nullable(TIMESTAMP),
                        "last_error": nullable(STRING),
                        "stderr": nullable(STRING),
                        "logs": array(ANY),
                        "result": ANY,
                    },
                    required=["job_id", "log_id", "plugin", "command", "status", "attempt", "created_at"],
                    description="One attempt; `result` with include_result=true"
                    + RESULT_NOTE.replace("`last_error`", "`last_error`, `stderr`, `logs`"),
                )
            ),
            "total": INTEGER,
            "total_is_estimate": BOOLEAN,
            "rank_window": INTEGER,
        },
        required=["logs", "total", "total_is_estimate"],
        description="With `query`: ranked (ts_rank, then recency) among the `rank_window` most recent matches",
    ),
    "QueueMetrics": obj(
        {
            "queue_depth": INTEGER,
            "running_count": INTEGER,
            "delayed_count": INTEGER,
            "dead_count": INTEGER,
            "active_jobs": array(
                obj(
                    {"job_id": STRING, "plugin": STRING, "command": STRING, "started_at": nullable(TIMESTAMP)},
                    required=["job_id", "plugin", "command"],
                )
            ),
            "plugin_lanes": array(
                obj({"plugin": STRING, "active_count": INTEGER}, required=["plugin", "active_count"])
            ),
            "in_flight": INTEGER,
            "plugins": {
                "type": "object",
                "additionalProperties": obj(
                    {"queued": INTEGER, "in_flight": INTEGER, "delayed": INTEGER, "parallelism": nullable(INTEGER)},
                    required=["queued", "in_flight", "delayed", "parallelism"],
                ),
            },
            "runners": obj(
                {
                    "count": INTEGER,
                    "capacity": INTEGER,
                    "busy": INTEGER,
                    "utilisation": NUMBER,
                    "instances": array(OBJECT),
                },
                required=["count", "capacity", "busy", "utilisation", "instances"],
            ),
            "timestamp": TIMESTAMP,
        },
        required=[
            "queue_depth",
            "running_count",
            "delayed_count",
            "dead_count",
            "in_flight",
            "plugins",
            "runners",
            "timestamp",
        ],
        description="Live: the work stream, each plugin's runner consumer and the runners' heartbeats",
    ),
    "PluginStats": PLUGIN_STATS,
    "AnalyticsSummary": {
        **obj(
            {
                "window": {"const": "24h"},
                "stats": counts("attempts completed in the window, by status (zero ones left out)"),
                "window_hours": INTEGER,
                "plugins": {"type": "object", "additionalProperties": ref("PluginStats")},
                "timestamp": TIMESTAMP,
            },
            description="The last 24 hours of the jobs read model: overall, then per plugin",
        ),
        "allOf": [ref("PluginStats")],
        "required": ["window", "stats", "window_hours", "plugins", "timestamp"],
    },
    "ConfigView": obj(
        {
            "compiled_routes": {"type": "object", "additionalProperties": array(OBJECT)},
            "compiled_pipelines": {"type": "object", "additionalProperties": OBJECT},
            "tokens": array(obj({"name": STRING}, required=["name"])),
        },
        required=["compiled_routes", "compiled_pipelines"],
        description="The loaded configuration with secrets redacted (`[REDACTED]`; token values dropped)",
    ),
    "Reloaded": obj(
        {
            "status": {"const": "ok"},
            "reloaded_at": TIMESTAMP,
            "message": STRING,
            "fingerprint": STRING,
            "services": array(OBJECT),
            "pending": array(OBJECT),
        },
        required=["status", "reloaded_at", "message"],
        description="Every service that prepared the new config applied it (`pending`: had not acked in time)",
    ),
    "RejectedEvents": obj(
        {
            "events": array(
                obj(
                    {
                        "seq": INTEGER,
                        "id": STRING,
                        "subject": STRING,
                        "ingest_seq": nullable(INTEGER),
                        "type": nullable(STRING),
                        "reason": STRING,
                        "raw": STRING,
                        "raw_bytes": INTEGER,
                        "truncated": BOOLEAN,
                        "rejected_at": TIMESTAMP,
                    },
                    required=["seq", "id", "subject", "reason", "raw", "raw_bytes", "truncated", "rejected_at"],
                )
            ),
            "count": INTEGER,
            "limit": INTEGER,
            "offset": INTEGER,
        },
        required=["events", "count", "limit", "offset"],
    ),
    "Schedules": obj(
        {
            "jobs": array(
                obj(
                    {
                        "schedule_id": STRING,
                        "mode": STRING,
                        "status": {"enum": ["scheduled", "disabled"]},
                        "next_run_at": nullable(TIMESTAMP),
                        "plugin": STRING,
                        "id": STRING,
                        "command": STRING,
                        "payload": OBJECT,
                        "kind": STRING,
                        "spec": ANY,
                        "enabled": BOOLEAN,
                        "next_fire_at": nullable(TIMESTAMP),
                        "last_fire_at": nullable(TIMESTAMP),
                        "last_job_id": nullable(STRING),
                        "last_decision": nullable(STRING),
                        "last_decision_at": nullable(STRING),
                        "armed_at": nullable(TIMESTAMP),
                    },
                    required=["schedule_id", "mode", "status", "plugin", "id", "command", "kind", "enabled"],
                )
            ),
            "count": INTEGER,
        },
        required=["jobs", "count"],
    ),
    "Checks": obj(
        {"ok": BOOLEAN, "captured_at": TIMESTAMP, "checks": array(CHECK), "leaders": LEADERS},
        required=["ok", "captured_at", "checks"],
    ),
    "Topology": obj(
        {
            "version": STRING,
            "captured_at": TIMESTAMP,
            "plugins": array(
                obj(
                    {
                        "name": STRING,
                        "version": STRING,
                        "active": BOOLEAN,
                        "inputs": array(SIGNAL_OF),
                        "outputs": array(SIGNAL_OF),
                    },
                    required=["name", "active", "inputs", "outputs"],
                )
            ),
            "signals": array(
                obj(
                    {"name": STRING, "producers": array(PLUGIN_COMMAND), "consumers": array(PLUGIN_COMMAND)},
                    required=["name", "producers", "consumers"],
                )
            ),
        },
        required=["version", "captured_at", "plugins", "signals"],
    ),
    "Stopwatch": obj(
        {
            "plugin": STRING,
            "window": {"enum": list(stopwatch.WINDOWS)},
            "captured_at": TIMESTAMP,
            "steps": array(
                obj(
                    {
                        "step": STRING,
                        **PERCENTILES,
                        "trend_p95_ms": {
                            **array(INTEGER),
                            "minItems": stopwatch.BUCKETS,
                            "maxItems": stopwatch.BUCKETS,
                        },
                        "subs": array(obj({"name": STRING, **PERCENTILES}, required=["name", *PERCENTILES])),
                    },
                    required=["step", *PERCENTILES, "trend_p95_ms"],
                )
            ),
            "subs_unavailable": {"const": "insufficient_scope"},
        },
        required=["plugin", "window", "captured_at", "steps"],
    ),
    "WebhookAccepted": obj(
        {
            "job_id": STRING,
            "status": {"const": "queued"},
            "plugin": STRING,
            "command": STRING,
            "event_type": STRING,
            "duplicate": BOOLEAN,
        },
        required=["job_id", "status", "plugin", "command", "event_type", "duplicate"],
        description="`duplicate`: a replayed delivery, answered with the first one's job and no new job",
    ),
    "RelayEnvelope": body_obj(
        {
            "event": obj(
                {"type": {"type": "string", "minLength": 1}, "payload": JSON_OBJECT, "dedupe_key": STRING},
                required=["type"],
            ),
            "origin": obj({"instance": STRING, "job_id": STRING, "event_id": STRING}),
        },
        required=["event"],
    ),
    "RelayAccepted": obj(
        {"status": {"const": "accepted"}, "peer": STRING, "event_type": STRING, "receiver_event_id": STRING},
        required=["status", "peer", "event_type", "receiver_event_id"],
    ),
    "VaultPrincipal": obj({"name": STRING, "kind": STRING}, required=["name"]),
    "VaultSecret": obj(
        {
            "name": STRING,
            "value": STRING,
            "authorized_principals": array(STRING),
            "pattern": {"type": "string", "description": "default: manual"},
        },
        required=["name"],
    ),
    "VaultRoll": obj({"name": STRING, "value": STRING}, required=["name"]),
    "VaultName": obj({"name": STRING}, required=["name"]),
    "VaultDone": obj({"name": STRING, "status": STRING}, required=["name", "status"]),
    "VaultRolled": obj(
        {"name": STRING, "rolled": nullable(array(STRING)), "skipped": nullable(array(STRING))},
        required=["name", "rolled", "skipped"],
    ),
}

# --- operations ----------------------------------------------------------------------------------------


def json(name: str, description: str = "OK") -> Resp:
    return Resp(description, ref(name))


def problem(description: str) -> Resp:
    return Resp(description, ref("Problem"))


INVALID = problem("Bad request: a malformed or wrongly typed parameter or body, named in the answer")
UNAUTHORIZED = problem("Missing or invalid bearer token")
FORBIDDEN = problem("The token lacks the route's scope")
UNAVAILABLE = problem("The event bus (NATS) or the read-model database is unavailable; retry shortly")
OTHER = problem("Any other refusal, e.g. 405 (with Allow), 413, 415 or 429 (with Retry-After): always JSON")
CONFLICT = problem("Idempotency-Key already used for a different request, or still in progress")
BUSY = problem("All of the API's synchronous slots are taken (api.max_concurrent_sync), or the rate limit")


def answers(ok: dict[str, Resp], *, guarded: bool = True, **more: Resp) -> dict[str, Resp]:
    """`ok`, then `more` (keys `r404`: 404 ...), the token errors when `guarded`, 503 and the catch-all."""
    out: dict[str, Resp] = {**ok, "400": INVALID}
    out.update({code.removeprefix("r"): resp for code, resp in more.items()})
    if guarded:
        out.update({"401": UNAUTHORIZED, "403": FORBIDDEN})
    out.update({"503": out.get("503", UNAVAILABLE), "default": OTHER})
    return dict(sorted(out.items(), key=lambda item: (item[0] == "default", item[0])))


def op(method: str, path: str, summary: str, tag: str, responses: dict[str, Resp], **kw: Any) -> Operation:
    kw.setdefault("security", (BEARER,))
    return Operation(method, path, summary, tag, responses, **kw)


def page(default: int, maximum: int) -> tuple[Param, Param]:
    return (
        Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": maximum, "default": default}),
        Param("offset", "query", {"type": "integer", "minimum": 0, "maximum": listing.MAX_OFFSET, "default": 0}),
    )


#: as Ductile's document (services/api/discovery.py) describes it
IDEMPOTENCY_KEY = Param(
    idempotency.HEADER,
    "header",
    cast(Schema, discovery.IDEMPOTENCY_KEY["schema"]),
    cast(str, discovery.IDEMPOTENCY_KEY["description"]),
)
#: `?wait=` of POST /plugin: true (30 s), or a duration up to 5 minutes ("10s", "250ms", "2m", "90")
WAIT: Schema = {
    "type": "string",
    "pattern": "^(true|false|([0-9]|[1-9][0-9]|[12][0-9][0-9]|300)s?|[1-4]m|[0-9]{1,5}ms)$",
    "description": "Wait for the job to be final: `true` (30 s) or a duration up to 5 minutes (e.g. 10s, 2m, "
    "1m30s, 250ms); absent, empty, 0 or false: do not wait",
}
STATUS = Param("status", "query", STATUS_FILTER)
NOT_FOUND_JOB = problem("No such job")
NOT_FOUND_PLUGIN = problem("The plugin is unknown or disabled")
SYSTEM_READ = "Needs system:ro or system:rw (Ductile's own scopes; `*` admits it too)"

OPERATIONS: list[Operation] = [
    op(
        "GET",
        "/healthz",
        "Health: NATS and Postgres checked, queue depth, plugins",
        "system",
        {
            "200": json("Healthz", "Every component is up"),
            "400": INVALID,
            "503": json("Healthz", "A component fails (`failing` names it)"),
            "default": OTHER,
        },
        description="Public (a load balancer's check). An admin token (`*`) also sees paths, error texts and "
        "broken manifests.",
    ),
    op(
        "GET",
        "/plugins",
        "The enabled plugins and their commands",
        "discovery",
        answers({"200": json("PluginList")}, guarded=False),
    ),
    op(
        "GET",
        "/plugin/{name}",
        "One plugin: its commands with their input and output schemas",
        "discovery",
        answers({"200": json("Plugin")}, r404=NOT_FOUND_PLUGIN),
    ),
    op(
        "GET",
        "/openapi.json",
        "Ductile's OpenAPI document of every plugin command",
        "discovery",
        answers({"200": json("OpenAPIDocument")}, guarded=False),
        description="One `post` per enabled plugin command at `/plugin/{plugin}/{command}`, its request body "
        "built from the command's `input_schema` (the whole gateway is this document, /api/openapi.json).",
    ),
    op(
        "GET",
        "/plugin/{name}/openapi.json",
        "Ductile's OpenAPI document of one plugin's commands",
        "discovery",
        answers({"200": json("OpenAPIDocument")}, guarded=False, r404=NOT_FOUND_PLUGIN),
    ),
    op(
        "GET",
        "/skills",
        "Every plugin command and pipeline as a skill",
        "discovery",
        answers({"200": json("SkillList")}, guarded=False),
    ),
    op(
        "GET",
        "/.well-known/ai-plugin.json",
        "The AI-plugin manifest (points at /openapi.json)",
        "discovery",
        answers({"200": json("AiPlugin")}, guarded=False),
    ),
    op(
        "POST",
        "/plugin/{plugin}/{command}",
        "Run one plugin command as a job",
        "commands",
        answers(
            {
                "202": json("CommandQueued", "Queued (or, with `?wait=`, still not final when the wait ran out)"),
                "200": json("CommandFinished", "`?wait=`: the job is final"),
            },
            r400=problem(
                "Malformed JSON, a body that is not an object, unknown keys without `payload`, a bad `wait`, "
                "or a payload that violates the command's input_schema (`violations` lists them)"
            ),
            r403=problem(
                "The token lacks the scope: plugin:ro (or plugin:invoke:ro) runs `read` commands, anything else "
                "needs plugin:rw"
            ),
            r404=problem("The plugin is unknown or disabled, or has no such command (`commands` lists them)"),
            r409=CONFLICT,
            r429=BUSY,
        ),
        description="The payload is checked against the command's `input_schema` (each command's own "
        "document: /plugin/{name}/openapi.json). For `handle`, the payload becomes an `api.trigger` event.",
        params=(Param("wait", "query", WAIT), IDEMPOTENCY_KEY),
        body=ref("WorkRequest"),
    ),
    op(
        "POST",
        "/pipeline/{name}",
        "Run a configured pipeline",
        "pipelines",
        answers(
            {
                "202": Resp(
                    "Queued (asynchronous), or a synchronous run still running at its timeout",
                    {"oneOf": [ref("PipelineQueued"), ref("PipelineRunning")]},
                ),
                "200": json("PipelineFinished", "A synchronous pipeline ended within its timeout"),
            },
            r400=problem(
                "Malformed JSON, a body that is not an object, unknown keys without `payload`, or a synchronous "
                "run of a pipeline that fans out into several entry steps (use ?async=true)"
            ),
            r404=problem("No such pipeline"),
            r409=CONFLICT,
            r429=BUSY,
        ),
        description="`execution_mode: synchronous` pipelines wait (on the root job's events) up to their "
        "timeout unless `?async=true`.",
        params=(Param("async", "query", BOOLEAN, "Answer at once, even for a synchronous pipeline"), IDEMPOTENCY_KEY),
        body=ref("WorkRequest"),
    ),
    op(
        "GET",
        "/job/{job_id}",
        "One job: status, attempt, times, result",
        "job status",
        answers({"200": json("JobStatus")}, r404=NOT_FOUND_JOB),
    ),
    op(
        "GET",
        "/job/{job_id}/tree",
        "A job and every job it caused (a pipeline's steps)",
        "pipelines",
        answers({"200": json("JobTree")}),
    ),
    op(
        "POST",
        "/job/{job_id}/cancel",
        "Cancel a queued or running job",
        "job status",
        answers(
            {"202": json("CancelAccepted", "Cancelling: a queued job never runs, a running one is signalled")},
            r404=NOT_FOUND_JOB,
            r409=problem("The job is already final (`status` names it)"),
        ),
    ),
    op(
        "POST",
        "/job/{job_id}/retry",
        "Re-queue a job that ended without success, as a new job",
        "job status",
        answers(
            {"202": json("RetryAccepted")},
            r403=problem("The token lacks jobs:rw, or the scope running the job's command needs"),
            r404=NOT_FOUND_JOB,
            r409=problem(
                "The job did not end without success (only dead, failed, timed_out, cancelled, skipped retry), "
                "or the Idempotency-Key clashes"
            ),
        ),
        params=(IDEMPOTENCY_KEY,),
    ),
    op(
        "GET",
        "/jobs",
        "Jobs, newest first",
        "listings",
        answers({"200": json("JobPage")}),
        params=(
            Param("plugin", "query", description="Exact plugin name"),
            Param("command", "query", description="Exact command name"),
            STATUS,
            *page(listing.DEFAULT_LIMIT, listing.JOBS_MAX_LIMIT),
        ),
    ),
    op(
        "GET",
        "/job-logs",
        "Job attempts with their logs, newest first or ranked by a text query",
        "listings",
        answers({"200": json("JobLogPage")}),
        params=(
            Param("job_id", "query", description="Exact job id"),
            Param("plugin", "query", description="Exact plugin name"),
            Param("command", "query", description="Exact command name"),
            STATUS,
            Param("submitted_by", "query", description="Exact submitter"),
            Param("from", "query", TIMESTAMP, "Completed at or after (RFC 3339, with a zone)"),
            Param("to", "query", TIMESTAMP, "Completed at or before (RFC 3339, with a zone)"),
            Param(
                "query",
                "query",
                description="Full text (web-search syntax) over last_error, stderr and result, or a plain "
                "case-insensitive substring of them",
            ),
            *page(listing.DEFAULT_LIMIT, listing.LOGS_MAX_LIMIT),
            Param("include_result", "query", BOOLEAN, "Include each attempt's result"),
        ),
    ),
    op(
        "GET",
        "/analytics/queue",
        "Queue depth, in-flight work, runners and their utilisation",
        "operations",
        answers({"200": json("QueueMetrics")}),
    ),
    op(
        "GET",
        "/analytics/summary",
        "Job counts, success rate and durations of the last 24 hours",
        "operations",
        answers({"200": json("AnalyticsSummary")}),
    ),
    op(
        "GET",
        "/config/view",
        "The loaded configuration, secrets redacted",
        "operations",
        answers({"200": json("ConfigView")}),
    ),
    op(
        "POST",
        "/system/reload",
        "Reload the configuration in every service, or in none",
        "operations",
        answers(
            {"200": json("Reloaded")},
            r409=problem("A service cannot take the new config (`failed` says which and why); the old one stays"),
            r501=Resp("Reload not supported by this process", ref("BareError")),
        ),
    ),
    op(
        "GET",
        "/events",
        "The event log as server-sent events, live",
        "events",
        answers(
            {
                "200": Resp(
                    "`text/event-stream`: `id:` the stream sequence, `event:` the event's name, `data:` its JSON; "
                    "`: ping` comments every `heartbeat` seconds",
                    {"type": "string"},
                    media="text/event-stream",
                )
            },
            r429=problem("The token holds api.limits.sse_per_token streams already"),
        ),
        description="Default: Ductile's hub events (job.enqueued, job.completed, ...; the last 256 first); "
        "`format=log`: the stored envelopes (from now on). With `Last-Event-ID` (or `last_event_id`) the "
        "stream resumes right after that sequence.",
        params=(
            Param("type", "query", description="One event name, or a family (`job.`, `job.*`)"),
            Param("job_id", "query", description="One job's events"),
            Param("format", "query", {"enum": list(events_mod.FORMATS), "default": "ductile"}),
            Param(
                "heartbeat",
                "query",
                {"type": "integer", "minimum": 1, "maximum": 300, "default": events_mod.DEFAULT_HEARTBEAT_S},
                "Seconds between `: ping` comments",
            ),
            Param("last_event_id", "query", {"type": "integer", "minimum": 0}, "As the Last-Event-ID header"),
            Param("Last-Event-ID", "header", {"type": "integer", "minimum": 0}, "Resume after this sequence"),
        ),
        security=(BEARER, TOKEN_QUERY),
    ),
    op(
        "GET",
        "/events/rejected",
        "Events from outside (ingest.<type>) the dispatcher refused, newest first",
        "events",
        answers({"200": json("RejectedEvents")}),
        params=page(50, 1000),
    ),
    op(
        "GET",
        "/scheduler/jobs",
        "Every configured schedule: spec, command, next and last fire",
        "scheduler",
        answers({"200": json("Schedules")}),
    ),
    op(
        "GET",
        "/system/doctor",
        "The config file on disk validated again (without applying it)",
        "operations",
        answers({"200": json("Checks", "`ok` false when the config does not load; warnings leave it true")}),
        description=SYSTEM_READ,
    ),
    op(
        "GET",
        "/system/selfcheck",
        "The running gateway's own checks: NATS, Postgres, runners, plugins",
        "operations",
        answers({"200": json("Checks")}),
        description=SYSTEM_READ,
    ),
    op(
        "GET",
        "/topology",
        "The pipeline graph: which plugin emits and consumes which signal",
        "operations",
        answers({"200": json("Topology")}),
        description=SYSTEM_READ,
    ),
    op(
        "GET",
        "/stopwatch/{plugin}",
        "How long a plugin's runs took, per pipeline step",
        "operations",
        answers({"200": json("Stopwatch")}),
        params=(
            Param("window", "query", {"enum": list(stopwatch.WINDOWS), "default": "1h"}),
            Param(
                "include_subs",
                "query",
                description="`true`: the plugin's own sub-timings too (needs a results scope)",
            ),
        ),
    ),
    op(
        "GET",
        "/metrics",
        "Prometheus metrics",
        "operations",
        answers(
            {
                "200": Resp(
                    "The Prometheus text exposition format",
                    {"type": "string"},
                    media="text/plain",
                )
            },
        ),
    ),
]


def vault(path: str, summary: str, body: str, answer: str = "VaultDone") -> Operation:
    return op(
        "POST",
        path,
        summary,
        "vault",
        {
            "200": json(answer),
            "400": Resp("Invalid JSON body, or the vault refuses the operation (its reason)", ref("BareError")),
            "401": Resp("Missing or invalid Authorization header, or not the vault admin token", ref("BareError")),
            "404": problem("No vault is loaded (the route is gone)"),
            "500": Resp("The vault file could not be written: nothing changed", ref("BareError")),
            "default": OTHER,
        },
        description="Mounted when the config loads a vault. Each change publishes `evt.system.vault_changed` "
        "(never a value).",
        body=ref(body),
        body_required=True,
        security=(VAULT_ADMIN,),
    )


OPERATIONS += [
    vault("/vault/principal", "Register a principal", "VaultPrincipal"),
    vault("/vault/secret", "Set a secret (create or update)", "VaultSecret"),
    vault("/vault/secret/roll", "Roll a secret to a new value", "VaultRoll"),
    vault("/vault/secret/revoke", "Revoke a secret", "VaultName"),
    vault("/vault/principal/revoke", "Revoke a principal", "VaultName"),
    vault("/vault/principal/purge", "Purge a principal", "VaultName"),
    vault("/vault/principal/roll", "Roll every auto secret of a principal", "VaultName", "VaultRolled"),
]

# --- routes the config mounts -------------------------------------------------------------------------


def _scheme_name(header: str) -> str:
    return "WebhookSignature." + re.sub(r"[^A-Za-z0-9_-]", "_", header)


def webhook_scheme(header: str) -> dict[str, Any]:
    return {
        "type": "apiKey",
        "in": "header",
        "name": header,
        "description": "The webhook's HMAC-SHA256 signature with its secret, as its `scheme` makes it (hmac: of the "
        "raw body, or of `<timestamp>.<body>`, as `sha256=<hex>` or bare hex; stripe; slack)",
    }


def webhook_params(hook: hooks_mod.Webhook | None) -> tuple[Param, ...]:
    """The headers a webhook reads besides its signature."""
    if hook is None:
        return ()
    named = (
        (hook.timestamp_header, "The signed unix timestamp (refused outside the tolerance)", True),
        (hook.event_header, "Names the event: its type becomes webhook.<name>.<value>", False),
        (hook.delivery_header, "Names the delivery: a redelivery within dedupe_window gets the first job", False),
    )
    return tuple(Param(name, "header", STRING, text, required=needed) for name, text, needed in named if name)


def webhook_operation(path: str, hook: hooks_mod.Webhook | None) -> Operation:
    header = hook.signature_header if hook is not None else hooks_mod.DEFAULT_SIGNATURE_HEADER
    what = f" as a job of {hook.plugin}.{hook.command}" if hook is not None else ""
    return Operation(
        "POST",
        path,
        f"Webhook {hook.name if hook is not None else path}: accept a signed delivery{what}",
        "webhooks",
        {
            "202": json("WebhookAccepted"),
            "400": INVALID,
            "403": problem("Missing or wrong signature, or a signed timestamp outside the tolerance"),
            "404": problem("The webhook was removed by a reload"),
            "413": problem("The body is over the webhook's max_body_size"),
            "503": UNAVAILABLE,
            "default": OTHER,
        },
        description="No bearer token: the signature is the authentication. A JSON object body is the event's "
        "payload (an event envelope `{type, payload}` is taken as the event); any other body is "
        '`{"raw": <text>}`. A replay (same body digest or delivery id within dedupe_window) is answered '
        "with the first delivery's job.",
        params=webhook_params(hook),
        body=ref("JsonValue"),
        body_media=("*/*",),
        security=(_scheme_name(header),),
        rule_key=("POST", scopes.WEBHOOK_PATH),
    )


def relay_operation(path: str) -> Operation:
    headers = (
        Param(relay_mod.HEADER_PEER, "header", STRING, "The peer's name (as in the path)", required=True),
        Param(relay_mod.HEADER_TIMESTAMP, "header", TIMESTAMP, "When it was signed (RFC 3339)", required=True),
        Param(relay_mod.HEADER_KEY_ID, "header", STRING, "The peer's key id (required with require_key_id)"),
    )
    return Operation(
        "POST",
        path,
        "Accept an event relayed by a peer gateway",
        "relay",
        {
            "202": json("RelayAccepted", "Accepted: published as ingest.<type> (once per dedupe key)"),
            "400": problem("The envelope is invalid (why)"),
            "403": problem("Unknown peer, identity or key id mismatch, timestamp or signature refused"),
            "413": problem("relay payload too large"),
            "422": problem("The event type is not in the peer's `accept` list"),
            "503": UNAVAILABLE,
            "default": OTHER,
        },
        description="No bearer token: the peer's HMAC signature is the authentication. The event starts every "
        "pipeline whose `on` is its type.",
        params=headers,
        body=ref("RelayEnvelope"),
        body_required=True,
        security=(RELAY_SIGNATURE,),
        rule_key=("POST", scopes.RELAY_PATH),
    )


def mounted_operations(
    app: web.Application, webhook_config: Sequence[Mapping[str, Any]]
) -> tuple[list[Operation], dict[str, Any]]:
    """The rows (and the security schemes they name) of the routes the config mounted: each webhook path
    (`webhook_config`: the config's `webhooks`) and the relay ingress, found by their handlers."""
    hooks = {hook.path: hook for hook in hooks_mod.parse_all(webhook_config)}
    rows: list[Operation] = []
    schemes: dict[str, Any] = {}
    for route in app.router.routes():
        if route.resource is None:
            continue
        path = route.resource.canonical
        if route.handler is webhooks.receive:
            hook = hooks.get(path)
            header = hook.signature_header if hook is not None else hooks_mod.DEFAULT_SIGNATURE_HEADER
            schemes[_scheme_name(header)] = webhook_scheme(header)
            rows.append(webhook_operation(path, hook))
        elif route.handler is relay.receive:
            rows.append(relay_operation(path))
    return rows, schemes

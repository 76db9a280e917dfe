"""The Laddr dialect policy, in one place, for every `/api/*` and `/ws/*` request (Laddr 0.9.6's
FastAPI app is what its clients were written against; /work/shared/spec/laddr-conformance.md §0.2, §2):

  * success codes: any 2xx a handler answers (Headrace's 202 for work it queued) goes out as 200,
    Laddr's only success code (`middleware`, so no handler can forget);
  * error bodies: `{"detail": ..., "error": ..., "code": ..., <Headrace's other keys>}` — Laddr's
    `detail` beside Headrace's keys (`render`, called by the API's error middleware for every
    `errors.ApiError`; `middleware` adds `detail` to the few JSON errors built without one, e.g. 429);
  * `detail` texts: Laddr's per route ("Job not found", "Trace not found", ...), 401 "Invalid or
    missing API key", 404 "Not Found" for an unknown path, 405 "Method Not Allowed" (with `Allow`);
    an explicit `detail=` of the error wins, else Headrace's message;
  * validation: a 400 that names where the problem is (`field=` → body, `parameter=` → query or
    path, `header=`, or the error's `loc`) is FastAPI's 422 `{"detail": [{type, loc, msg, input}]}`.
    `type` is the error's `kind` when the handler gave one, `missing` when the request lacks the
    value, else the Pydantic word for the mismatch with the type Laddr's request models declare
    for that name (`FIELD_TYPES`), else `value_error` (the value has the right type but Headrace
    refuses it). A 400 that names no place (an Idempotency-Key clash...) stays a 400 with `detail`.

Never changes a status class: a 4xx stays a 4xx (400 → 422 only), a 5xx a 5xx. Ductile's routes
(everything else) are not touched.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from services.api import state
from services.core import errors

UNAUTHORIZED = "Invalid or missing API key"
NOT_FOUND = "Not Found"
METHOD_NOT_ALLOWED = "Method Not Allowed"

#: Laddr's 404 `detail` for the resource a route is about (by route template)
NOT_FOUND_TEXTS: Mapping[str, str] = {
    "/api/jobs/{job_id}": "Job not found",
    "/api/jobs/{job_id}/replay": "Job not found",
    "/api/prompts/{prompt_id}": "Prompt execution not found",
    "/api/prompts/{prompt_id}/cancel": "Prompt execution not found",
    "/api/traces/{trace_id}": "Trace not found",
    "/api/batches/{batch_id}": "Batch not found",
    "/api/batches/{batch_id}/add-tasks": "Batch not found",
    "/api/agents/{agent_name}/tools": "Agent not found",
    "/api/agents/{agent_name}/chat": "Agent not found",
    "/api/agents/{agent_name}/batch": "Agent not found",
    "/api/responses/{task_id}/resolved": "Response not found or expired",
}
AGENT_NOT_FOUND = "Agent not found"

#: the type Laddr's request models (and query parameters) declare for each name (conformance §1.2);
#: no name has two types across them
FIELD_TYPES: Mapping[str, str] = {
    "pipeline_name": "str",
    "inputs": "dict",
    "prompt_name": "str",
    "mode": "str",
    "agents": "list",
    "reexecute": "bool",
    "request": "bool",
    "message": "str",
    "wait": "bool",
    "timeout": "int",
    "tasks": "list",
    "batch_id": "str",
    "agent_name": "str",
    "limit": "int",
    "offset": "int",
    "tail": "int",
    "timestamps": "bool",
    "job_id": "str",
    "agent": "str",
    "since": "str",
}
#: Pydantic's `msg` for each error type (FastAPI 0.11x / Pydantic 2); `{...}` filled from `ctx`
MESSAGES: Mapping[str, str] = {
    "missing": "Field required",
    "string_type": "Input should be a valid string",
    "dict_type": "Input should be a valid dictionary",
    "list_type": "Input should be a valid list",
    "bool_type": "Input should be a valid boolean",
    "bool_parsing": "Input should be a valid boolean, unable to interpret input",
    "int_type": "Input should be a valid integer",
    "int_parsing": "Input should be a valid integer, unable to parse string as an integer",
    "int_from_float": "Input should be a valid integer, got a number with a fractional part",
    "float_parsing": "Input should be a valid number, unable to parse string as a number",
    "model_attributes_type": "Input should be a valid dictionary or object to extract fields from",
    "json_invalid": "JSON decode error",
    "greater_than_equal": "Input should be greater than or equal to {ge}",
    "less_than_equal": "Input should be less than or equal to {le}",
    "string_too_long": "String should have at most {max_length} characters",
}


def applies(path: str) -> bool:
    """Whether a request path is Laddr's (its HTTP API and its WebSockets)."""
    return path == "/api" or path.startswith(("/api/", "/ws/"))


# --- success codes ---------------------------------------------------------------------------------


def _with_detail(resp: web.StreamResponse) -> None:
    """A JSON error object built without the error middleware (e.g. limits' 429) gains `detail`."""
    if not isinstance(resp, web.Response) or resp.content_type != "application/json":
        return
    if not isinstance(resp.body, bytes | bytearray):  # None, or a Payload (a stream, not JSON built here)
        return
    try:
        body = orjson.loads(resp.body)
    except (orjson.JSONDecodeError, TypeError):
        return
    if isinstance(body, dict) and "detail" not in body:
        text = body.get("error") if isinstance(body.get("error"), str) else resp.reason
        resp.body = state.dumps({"detail": text, **body}).encode()


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: Laddr answers 200 for every success, and every JSON error carries `detail`."""
    resp = await handler(request)
    if not applies(request.path) or resp.prepared:  # a stream or a WebSocket has sent its status already
        return resp
    if 200 < resp.status < 300:
        resp.set_status(200)
    elif resp.status >= 400:
        _with_detail(resp)
    return resp


# --- errors ----------------------------------------------------------------------------------------


def detail_text(request: web.Request, exc: errors.ApiError) -> str:
    """Laddr's `detail` string for an error of this request."""
    explicit = exc.details.get("detail")
    if isinstance(explicit, str):
        return explicit
    if exc.status == 401:
        return UNAUTHORIZED
    if exc.status == 405:
        return METHOD_NOT_ALLOWED
    if exc.status == 404:
        if request.match_info.http_exception is not None:  # no route at this path
            return NOT_FOUND
        if "agent" in exc.details:  # the agent the request names (chat, a prompt's chain, a replay's agent)
            return AGENT_NOT_FOUND
        return NOT_FOUND_TEXTS.get(_template(request), exc.message)
    return exc.message


def _template(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else request.path


async def _body(request: web.Request) -> Any:
    """The request body as JSON (None when there is none or it is not JSON); aiohttp caches the bytes."""
    try:
        raw = await request.read()
        return orjson.loads(raw) if raw.strip() else None
    except Exception:  # unreadable or not JSON: nothing to quote
        return None


def _mismatch(expected: str | None, value: Any) -> str | None:
    """Pydantic's error type for `value` where `expected` is declared; None when it fits."""
    if expected == "str":
        return None if isinstance(value, str) else "string_type"
    if expected == "dict":
        return None if isinstance(value, dict) else "dict_type"
    if expected == "list":
        return None if isinstance(value, list) else "list_type"
    if expected == "bool":
        if isinstance(value, bool):
            return None
        if isinstance(value, str):
            return None if value.lower() in _BOOL_WORDS else "bool_parsing"
        return None if value in (0, 1) else "bool_type"
    if expected == "int":
        if isinstance(value, bool):
            return "int_type"
        if isinstance(value, int):
            return None
        if isinstance(value, float):
            return None if value.is_integer() else "int_from_float"
        if isinstance(value, str):
            try:
                int(value.strip())
            except ValueError:
                return "int_parsing"
            return None
        return "int_type"
    return None


_BOOL_WORDS = frozenset({"0", "1", "true", "false", "yes", "no", "on", "off", "t", "f", "y", "n"})


async def validation_item(request: web.Request, exc: errors.ApiError) -> dict[str, Any] | None:
    """FastAPI's `{type, loc, msg, input[, ctx]}` for a 400 that names where the problem is; else None."""
    details = exc.details
    if exc.loc is not None:
        loc: tuple[str | int, ...] = exc.loc
    elif isinstance(details.get("field"), str):
        loc = ("body", details["field"])
    elif isinstance(details.get("parameter"), str):
        name = details["parameter"]
        loc = ("path" if name in request.match_info else "query", name)
    elif isinstance(details.get("header"), str):
        loc = ("header", details["header"].lower())
    elif exc.kind is not None:
        loc = ("body",)
    else:
        return None
    where, rest = loc[0], loc[1:]
    name = rest[0] if rest and isinstance(rest[0], str) else None
    present, value = False, None
    if where == "body":
        body = await _body(request)
        if name is None:
            present, value = body is not None, body if exc.kind != "json_invalid" else {}
        elif isinstance(body, dict) and name in body:
            present, value = True, body[name]
        else:
            value = body  # FastAPI quotes the object the field is missing from
    elif name is not None:
        source: Mapping[str, str] = {"query": request.query, "path": request.match_info, "header": request.headers}.get(
            str(where), {}
        )
        present, value = name in source, source.get(name)
    kind = exc.kind or ("missing" if not present else _mismatch(FIELD_TYPES.get(name or ""), value) or "value_error")
    ctx = dict(exc.ctx or ({"error": exc.message} if kind == "json_invalid" else {}))
    if kind == "value_error":
        msg = f"Value error, {exc.message}"
    else:
        try:
            msg = MESSAGES.get(kind, exc.message).format(**ctx)
        except (KeyError, IndexError):
            msg = exc.message
    item: dict[str, Any] = {"type": kind, "loc": list(loc), "msg": msg, "input": value}
    if ctx:
        item["ctx"] = ctx
    return item


async def render(request: web.Request, exc: errors.ApiError) -> web.Response:
    """The Laddr answer to `exc`: Headrace's body plus `detail`, a located 400 as FastAPI's 422."""
    body = exc.body()
    status = exc.status
    detail: Any = detail_text(request, exc)
    if status == 400:
        item = await validation_item(request, exc)
        if item is not None:
            status, detail = 422, [item]
    headers = {"Allow": exc.allowed} if isinstance(exc, errors.MethodNotAllowed) else None
    try:
        text = state.dumps({**body, "detail": detail})
    except TypeError:  # an input that JSON cannot carry (a header's bytes that are not UTF-8): not quoted
        if isinstance(detail, list):
            detail = [{**item, "input": None} for item in detail]
        text = state.dumps({**body, "detail": detail})
    return web.Response(text=text, status=status, headers=headers, content_type="application/json")

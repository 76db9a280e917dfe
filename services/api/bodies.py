"""Request bodies and query parameters: parse and type-check, answering 400/413 with the field named."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from services.core import errors, values

MAX_BODY_BYTES = web.AppKey("max_body_bytes", int)


class Body(dict[str, Any]):
    """A parsed request body that remembers which top-level keys hold an integer beyond 64 bits (orjson
    reads one as a float, so such a value is refused wherever it would be used, never silently changed)."""

    out_of_range: frozenset[str] = frozenset()


def _first_document(raw: bytes) -> tuple[Any, bytes]:
    """The first JSON document of `raw` and its bytes, ignoring what follows it (Go's json.Decoder, which
    Ductile's /plugin and /pipeline handlers use, reads one value and never looks further)."""
    try:
        text = raw.decode("utf-8")
        start = len(text) - len(text.lstrip())
        _, end = json.JSONDecoder().raw_decode(text, start)
        head = text[:end].encode()
        return orjson.loads(head), head
    except (UnicodeDecodeError, ValueError) as exc:
        raise errors.BadRequest(f"malformed JSON body: {exc}") from None


async def json_object(
    request: web.Request, *, required: bool = False, extras_ignored: bool = False, first_document: bool = False
) -> Body:
    """The body as a JSON object; an empty body is {} unless `required`. With `extras_ignored` (the
    body's input is taken by `payload()`, other keys are ignored), an out-of-range integer is refused
    only where `payload()` keeps it. With `first_document`, anything after the first JSON document is
    ignored, as Ductile does."""
    limit = request.app[MAX_BODY_BYTES]
    if request.content_length is not None and request.content_length > limit:
        raise errors.PayloadTooLarge(f"request body exceeds {limit} bytes")
    try:
        raw = await request.read()  # cached by aiohttp: the idempotency fingerprint reads the same bytes
    except web.HTTPRequestEntityTooLarge:
        raise errors.PayloadTooLarge(f"request body exceeds {limit} bytes") from None
    if not raw.strip():
        if required:
            raise errors.BadRequest("request body must be a JSON object", kind="missing", loc=("body",))
        return Body()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if not (first_document and "unexpected content after document" in str(exc)):
            raise errors.BadRequest(
                f"malformed JSON body: {exc}", kind="json_invalid", loc=("body", exc.pos), ctx={"error": exc.msg}
            ) from exc
        body, raw = _first_document(raw)
    if not isinstance(body, dict):
        raise errors.BadRequest(
            f"request body must be a JSON object, not {type(body).__name__}",
            kind="model_attributes_type",
            loc=("body",),
        )
    parsed = Body(body)
    problem = values.problem_in_json(raw, body)
    if problem is not None and extras_ignored and problem == values.OUT_OF_RANGE:
        parsed.out_of_range = values.keys_out_of_range(raw)
    elif problem is not None:
        raise errors.BadRequest(f"request body is not accepted: {problem}", max_depth=values.MAX_DEPTH)
    return parsed


def check_value(raw: bytes, value: Any) -> None:
    """400 naming the limit when a parsed body breaks one of the value limits (services/core/values.py)."""
    problem = values.problem_in_json(raw, value)
    if problem is not None:
        raise errors.BadRequest(f"request body is not accepted: {problem}", max_depth=values.MAX_DEPTH)


def optional_object(body: dict[str, Any], field: str) -> dict[str, Any]:
    value = body.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise errors.BadRequest(f"'{field}' must be a JSON object", field=field, kind="dict_type")
    return value


def payload(body: dict[str, Any], field: str = "payload", known: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The work's input object `field` of a body (`payload` of POST /plugin/..., /pipeline/...; `inputs`
    of the Laddr POSTs, whose other fields are `known`); {} when absent or null.

    As in Ductile and Laddr, unknown keys next to `field` are ignored. A body with unknown keys but no
    `field` (e.g. the bare `{"message": "x"}`) is refused: it would run with an empty input, silently."""
    beyond = sorted(getattr(body, "out_of_range", frozenset()) & (known | {field}))
    if beyond:
        raise errors.BadRequest(
            f"request body is not accepted: {values.OUT_OF_RANGE} (in {', '.join(beyond)})", field=beyond[0]
        )
    unknown = sorted(set(body) - known - {field})
    if unknown and field not in body:
        raise errors.BadRequest(
            f"unknown field(s) {', '.join(map(repr, unknown))} and no {field!r}: put the "
            f'input under "{field}" ({{"{field}": {{...}}}})',
            field=field,
            unknown_fields=unknown,
        )
    return optional_object(body, field)


def int_param(request: web.Request, name: str, *, default: int, minimum: int = 0, maximum: int | None = None) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise errors.BadRequest(
            f"query parameter '{name}' must be an integer", parameter=name, kind="int_parsing"
        ) from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        kind, ctx = ("greater_than_equal", {"ge": minimum}) if value < minimum else ("less_than_equal", {"le": maximum})
        raise errors.BadRequest(f"query parameter '{name}' must be {bound}", parameter=name, kind=kind, ctx=ctx)
    return value


#: deeper pages than this are refused (400) rather than handed to Postgres as an out-of-range OFFSET
MAX_OFFSET = 1_000_000


def page(request: web.Request, *, default_limit: int = 50, max_limit: int = 1000) -> tuple[int, int]:
    """(limit, offset) of a listing, each checked and bounded (400 naming the parameter)."""
    limit = int_param(request, "limit", default=default_limit, minimum=1, maximum=max_limit)
    offset = int_param(request, "offset", default=0, minimum=0, maximum=MAX_OFFSET)
    return limit, offset


def bool_param(request: web.Request, name: str, *, default: bool = False) -> bool:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise errors.BadRequest(
        f"query parameter '{name}' must be a boolean (true/false)", parameter=name, kind="bool_parsing"
    )


def choice_param(
    request: web.Request,
    name: str,
    allowed: Sequence[str],
    aliases: Mapping[str, str] | None = None,
    *,
    fold_case: bool = False,
) -> str | None:
    """One of `allowed` (or an alias of one), None when absent; otherwise 400 listing the allowed values.
    `fold_case`: the value is trimmed and lower-cased before it is looked up."""
    raw = request.query.get(name)
    if raw is not None and fold_case:
        raw = raw.strip().lower()
    if raw is None or raw == "":
        return None
    value = (aliases or {}).get(raw, raw)
    if value not in allowed:
        accepted = [*allowed, *(aliases or {})]
        raise errors.BadRequest(
            f"query parameter '{name}' must be one of {', '.join(accepted)}", parameter=name, allowed=accepted
        )
    return value


_SPACED_OFFSET = re.compile(r"^(.*\d) (\d\d:?\d\d)$")


def time_param(request: web.Request, name: str) -> datetime | None:
    """An RFC 3339 timestamp with a zone (Z or an offset), None when absent; otherwise 400 naming it."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    # an unescaped '+' in a query string arrives as a space: "…T10:00:00 02:00" meant "+02:00"
    text = _SPACED_OFFSET.sub(r"\1+\2", raw.strip())
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise errors.BadRequest(
            f"query parameter '{name}' must be an RFC 3339 timestamp (e.g. 2026-02-21T10:00:00Z)", parameter=name
        )
    return moment

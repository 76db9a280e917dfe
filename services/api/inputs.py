"""One gate for every user-supplied value, run before any handler: path parameters (ids,
plugin, command, agent and pipeline names), query values and the headers the API turns into
NATS headers or KV keys are bounded and checked here, so nothing over-long or holding control
characters reaches NATS (a subject over the server's control-line limit makes it close the
connection) or Postgres (which refuses NUL in text). A violation is a JSON 400 naming the
parameter.
"""

from __future__ import annotations

import re

from aiohttp import web
from aiohttp.typedefs import Handler

from services.core import errors, subjects

#: a path parameter may become a NATS subject token (cmd.job.<id>.cancel, work.<plugin>.<command>)
MAX_PATH_PARAM = subjects.MAX_TOKEN_LENGTH
MAX_QUERY_VALUE = 1024
MAX_QUERY_PARAMS = 64
#: headers whose value the API copies into NATS (Nats-Msg-Id, KV keys) or parses
BOUNDED_HEADERS = {"Idempotency-Key": 255, "Last-Event-ID": 32}

#: C0 and C1 control characters (and DEL): never part of an id or a name
_PATH_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: in a query value: NUL and the C0 controls other than tab, CR and LF
_QUERY_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def check_request(request: web.Request) -> None:
    """Raise BadRequest naming the first path parameter, query parameter or header out of bounds."""
    for name, value in request.match_info.items():
        if len(value) > MAX_PATH_PARAM:
            raise errors.BadRequest(
                f"path parameter '{name}' is longer than {MAX_PATH_PARAM} characters",
                parameter=name,
                kind="string_too_long",
                ctx={"max_length": MAX_PATH_PARAM},
            )
        if _PATH_FORBIDDEN.search(value):
            raise errors.BadRequest(f"path parameter '{name}' holds control characters", parameter=name)
    if _PATH_FORBIDDEN.search(request.path):
        raise errors.BadRequest("the path holds control characters")
    query = request.query
    if len(query) > MAX_QUERY_PARAMS:
        raise errors.BadRequest(f"more than {MAX_QUERY_PARAMS} query parameters")
    for name, value in query.items():
        if len(name) > MAX_QUERY_VALUE or _QUERY_FORBIDDEN.search(name):
            raise errors.BadRequest(
                "a query parameter name is over-long or holds control characters", parameter=name[:64]
            )
        if len(value) > MAX_QUERY_VALUE:
            raise errors.BadRequest(
                f"query parameter '{name}' is longer than {MAX_QUERY_VALUE} characters",
                parameter=name,
                kind="string_too_long",
                ctx={"max_length": MAX_QUERY_VALUE},
            )
        if _QUERY_FORBIDDEN.search(value):
            raise errors.BadRequest(f"query parameter '{name}' holds control characters", parameter=name)
    for header, limit in BOUNDED_HEADERS.items():
        held = request.headers.get(header)
        if held is None:
            continue
        if len(held) > limit:
            raise errors.BadRequest(f"header {header} is longer than {limit} characters", header=header)
        if _PATH_FORBIDDEN.search(held) or not _is_utf8(held):
            raise errors.BadRequest(
                f"header {header} holds control characters or bytes that are not UTF-8", header=header
            )


def _is_utf8(value: str) -> bool:
    """aiohttp decodes header bytes that are not UTF-8 as surrogates; they cannot be encoded back."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@web.middleware
async def input_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    check_request(request)
    return await handler(request)

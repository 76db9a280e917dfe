"""HTTP-level failures as JSON: what aiohttp's parser refuses before any handler runs (an
over-long URL or header line, too many headers, a bad Content-Length, an unsupported
Content-Encoding) and a request body that does not decode as its Content-Encoding says.

`parser_error` builds the response the connection handler (services/api/limits.py) sends
in place of aiohttp's plain-text one; `body_encoding_middleware` turns a body that fails to
decompress into a 400, for every route (webhooks included), and refuses a Content-Encoding
the API cannot decode with 415.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestPayloadError

from services.api import state
from services.core import errors, logging

log = logging.get("api.http")

#: Content-Encodings aiohttp decodes without extra packages ('identity' and none: as is)
DECODABLE = frozenset({"", "identity", "gzip", "x-gzip", "deflate"})
MAX_MESSAGE = 200


def parser_error(status: int, exc: BaseException | None, message: str | None) -> web.Response:
    """The JSON answer to a request aiohttp could not parse (status as aiohttp chose it)."""
    if isinstance(exc, LineTooLong):
        text = "request line or a header line is too long"
    elif isinstance(exc, HttpProcessingError) and exc.message:
        text = exc.message.splitlines()[0]
    else:
        text = (message or "").splitlines()[0] if message else ""
    text = text[:MAX_MESSAGE] or ("malformed HTTP request" if status < 500 else "internal error")
    code = "malformed_request" if status < 500 else "internal_error"
    if status < 500:
        log.info("http_request_refused", status=status, error=text)
    else:
        log.error("http_handler_failed", status=status, error=repr(exc))
    resp = web.json_response({"error": text, "code": code}, status=status, dumps=state.dumps)
    resp.force_close()
    return resp


class UnsupportedEncoding(errors.ApiError):
    """The request body's Content-Encoding is not one the API decodes."""

    status = 415
    code = "unsupported_content_encoding"


@web.middleware
async def body_encoding_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in DECODABLE:
        raise UnsupportedEncoding(
            f"Content-Encoding {encoding[:40]!r} is not supported (use gzip, deflate or none)",
            supported=sorted(DECODABLE - {""}),
        )
    try:
        return await handler(request)
    except RequestPayloadError as exc:
        problem = errors.BadRequest(
            f"the request body could not be read as Content-Encoding "
            f"{encoding or 'identity'}: {str(exc).strip().splitlines()[-1][:MAX_MESSAGE]}"
        )
        # the rest of the body is unreadable: end the stream so aiohttp does not try to drain it
        # (which would fail again and drop the connection before this answer is sent), and close
        request.content.feed_eof()
        resp = web.json_response(problem.body(), status=problem.status, dumps=state.dumps)
        resp.force_close()
        return resp

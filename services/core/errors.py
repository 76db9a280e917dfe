"""The Headrace error tree. API errors carry an HTTP status and a stable code; the
API's middleware renders them as JSON. Infrastructure errors say whether a retry can help.
"""

from __future__ import annotations

from typing import Any


class HeadraceError(Exception):
    """Headrace failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class ConfigError(HeadraceError):
    """The configuration is invalid."""


class TransientError(HeadraceError):
    """A dependency is unavailable right now; retrying can help."""


class ApiError(HeadraceError):
    """The request failed.

    `details` are extra keys of the JSON body. `kind`, `loc` and `ctx` are never rendered by
    Headrace's dialect: they tell the Laddr dialect (services/api/laddr_dialect.py) what FastAPI
    would call the problem (its validation error `type`, e.g. `int_parsing`), where it is
    (`("body", 1)`) and its context (`{"ge": 1}`), where that cannot be told from
    `field=`/`parameter=` and the request itself.
    """

    status = 500
    code = "internal_error"

    def __init__(
        self,
        message: str | None = None,
        *,
        kind: str | None = None,
        loc: tuple[str | int, ...] | None = None,
        ctx: dict[str, Any] | None = None,
        **details: Any,
    ) -> None:
        super().__init__(message)
        self.details = details
        self.kind = kind
        self.loc = loc
        self.ctx = ctx

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.message, "code": self.code}
        out.update(self.details)
        return out


class BadRequest(ApiError):
    """Bad request."""

    status = 400
    code = "bad_request"


class Unauthorized(ApiError):
    """Missing or invalid bearer token."""

    status = 401
    code = "unauthorized"


class Forbidden(ApiError):
    """The token lacks the scope this action needs."""

    status = 403
    code = "forbidden"


class NotFound(ApiError):
    """Not found."""

    status = 404
    code = "not_found"


class MethodNotAllowed(ApiError):
    """The route exists but not for this method."""

    status = 405
    code = "method_not_allowed"

    def __init__(self, message: str | None = None, *, allowed: str = "", **details: Any) -> None:
        super().__init__(message, **details)
        self.allowed = allowed


class Conflict(ApiError):
    """Conflict."""

    status = 409
    code = "conflict"


class PayloadTooLarge(ApiError):
    """The request body is too large."""

    status = 413
    code = "payload_too_large"


class TooManyRequests(ApiError):
    """Too many requests."""

    status = 429
    code = "too_many_requests"


class BadGateway(ApiError):
    """An upstream store answered wrongly."""

    status = 502
    code = "bad_gateway"


class ServiceUnavailable(ApiError):
    """A dependency is unavailable."""

    status = 503
    code = "service_unavailable"

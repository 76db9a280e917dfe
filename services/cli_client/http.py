"""The verbs' HTTP client: one aiohttp session against the API, JSON in and out, and every failure
turned into a one-line ClientError that says what to change (the URL, the token, the id)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import orjson

from services.cli_client.connection import ClientError, Target

#: a plain request (a listing, a job): the API answers in well under this
REQUEST_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 5.0
#: longest error text quoted from a body that is not the API's JSON
MAX_QUOTED = 200

Params = Mapping[str, str | int | None]


def _error_text(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    if isinstance(body, str) and body.strip():
        return body.strip().splitlines()[0][:MAX_QUOTED]
    return ""


class Api:
    """`async with Api(target) as api:` then `await api.call("GET", "/jobs", params)`."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Api:
        headers = {"Accept": "application/json"}
        if self.target.token:
            headers["Authorization"] = f"Bearer {self.target.token}"
        self._session = aiohttp.ClientSession(headers=headers, raise_for_status=False)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use `async with Api(...)`"
        return self._session

    def unreachable(self, exc: BaseException) -> ClientError:
        if isinstance(exc, aiohttp.ClientConnectorError):
            cause = exc.os_error
            reason = os.strerror(cause.errno) if cause.errno else str(cause) or "cannot connect"
        elif isinstance(exc, TimeoutError):
            reason = "timed out"
        else:
            reason = str(exc) or type(exc).__name__
        return ClientError(f"cannot reach the API at {self.target.url} (from {self.target.url_source}): {reason}")

    async def request(self, method: str, path: str, params: Params | None = None) -> tuple[int, Any]:
        """(status, body parsed as JSON, else its text); a ClientError only when the API cannot be reached."""
        query = {k: str(v) for k, v in (params or {}).items() if v is not None}
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
        try:
            async with self.session.request(method, self.target.url + path, params=query, timeout=timeout) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise self.unreachable(exc) from None
        try:
            return status, orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            return status, raw.decode("utf-8", "replace")

    async def call(self, method: str, path: str, params: Params | None = None) -> Any:
        """The body of a 2xx answer; any other status is a ClientError naming it."""
        status, body = await self.request(method, path, params)
        if 200 <= status < 300:
            return body
        raise self.refused(status, body, path)

    def refused(self, status: int, body: Any, path: str) -> ClientError:
        """The one line for an answer that is not a success."""
        text = _error_text(body)
        if status == 401:
            return ClientError(
                f"401 unauthorized: {text or 'the API refused the token'} (token: {self.target.token_source}; "
                "set HEADRACE_TOKEN or pass --token)"
            )
        if status == 403:
            scopes = body.get("required_scopes") if isinstance(body, dict) else None
            needs = f" (needs one of: {', '.join(scopes)})" if scopes else ""
            return ClientError(f"403 forbidden: {text or 'the token lacks the scope'}{needs}")
        if status == 404:
            if isinstance(body, dict) and "code" in body:
                return ClientError(f"404: {text}")
            return ClientError(
                f"404 not found: {self.target.url}{path} (from {self.target.url_source}; is it a Headrace API?)"
            )
        return ClientError(f"{status}: {text or f'the API answered {status} to {path}'}")

    @contextlib.asynccontextmanager
    async def stream(self, path: str, params: Params | None = None) -> AsyncIterator[aiohttp.ClientResponse]:
        """An open streaming response (SSE): no read timeout, a ClientError for anything but a 200."""
        query = {k: str(v) for k, v in (params or {}).items() if v is not None}
        timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT_S, sock_read=None)
        headers = {"Accept": "text/event-stream"}
        try:
            resp = await self.session.get(self.target.url + path, params=query, timeout=timeout, headers=headers)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise self.unreachable(exc) from None
        try:
            if resp.status != 200:
                raw = await resp.read()
                try:
                    body: Any = orjson.loads(raw) if raw else None
                except orjson.JSONDecodeError:
                    body = raw.decode("utf-8", "replace")
                raise self.refused(resp.status, body, path)
            yield resp
        finally:
            resp.close()  # a stream is never read to its end: drop the connection

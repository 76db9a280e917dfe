"""CORS from `api.allowed_origins`, as Ductile's `corsMiddleware` (shared/spec/ductile-conformance.md
§1.1; our reference is silent, so Ductile's code decides), over real HTTP."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.support import stack as stack_mod
from tests.support.stack import ADMIN, Stack

LISTED = "https://app.example"


async def call(url: str, method: str, path: str, headers: dict[str, str]) -> tuple[int, Any, bytes]:
    async with aiohttp.ClientSession() as session, session.request(method, url + path, headers=headers) as resp:
        return resp.status, resp.headers, await resp.read()


async def test_a_listed_origin_gets_credentials_and_others_get_nothing(make_config: Any, start_stack: Any) -> None:
    hr: Stack = await start_stack(_with_origins(make_config, [LISTED]))
    auth = {"Authorization": f"Bearer {ADMIN}"}
    status, headers, _ = await call(hr.url, "GET", "/plugins", {**auth, "Origin": LISTED})
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == LISTED
    assert headers["Access-Control-Allow-Credentials"] == "true"
    assert headers["Access-Control-Expose-Headers"] == "Link"
    assert "Origin" in headers.getall("Vary")

    # errors carry them too (CORS runs before auth); an unlisted origin is served, without headers
    status, headers, _ = await call(hr.url, "GET", "/jobs", {"Origin": LISTED})
    assert status == 401 and headers["Access-Control-Allow-Origin"] == LISTED
    for extra in ({"Origin": "https://evil.example"}, {}):
        status, headers, _ = await call(hr.url, "GET", "/plugins", {**auth, **extra})
        assert status == 200 and "Access-Control-Allow-Origin" not in headers, extra

    # preflight: 204, no body, before auth
    status, headers, body = await call(
        hr.url,
        "OPTIONS",
        "/plugin/echo/poll",
        {"Origin": LISTED, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"},
    )
    assert status == 204 and body == b""
    assert headers["Access-Control-Allow-Methods"] == "GET, POST, PUT, DELETE, OPTIONS"
    assert headers["Access-Control-Allow-Headers"] == "Accept, Authorization, Content-Type, X-CSRF-Token"
    assert headers["Access-Control-Max-Age"] == "300"
    assert headers["Access-Control-Allow-Origin"] == LISTED
    vary = ",".join(headers.getall("Vary"))
    assert "Access-Control-Request-Method" in vary and "Access-Control-Request-Headers" in vary
    # a preflight from an unlisted origin is not answered as one
    status, headers, _ = await call(
        hr.url,
        "OPTIONS",
        "/plugin/echo/poll",
        {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert status != 204 and "Access-Control-Allow-Origin" not in headers


async def test_a_wildcard_allows_any_origin_without_credentials(make_config: Any, start_stack: Any) -> None:
    hr: Stack = await start_stack(_with_origins(make_config, ["*"]))
    status, headers, _ = await call(hr.url, "GET", "/healthz", {"Origin": "https://anywhere.example"})
    assert status == 200 and headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in headers
    status, headers, _ = await call(hr.url, "GET", "/healthz", {})
    assert "Access-Control-Allow-Origin" not in headers


async def test_without_allowed_origins_no_cors_headers(hr: Stack) -> None:
    status, headers, _ = await call(hr.url, "GET", "/healthz", {"Origin": LISTED})
    assert status == 200 and "Access-Control-Allow-Origin" not in headers
    status, headers, _ = await call(
        hr.url, "OPTIONS", "/healthz", {"Origin": LISTED, "Access-Control-Request-Method": "GET"}
    )
    assert status != 204 and "Access-Control-Allow-Origin" not in headers


def _with_origins(make_config: Any, origins: list[str]) -> Any:
    api = {**stack_mod.config_doc()["api"], "allowed_origins": origins}
    return make_config(api=api)

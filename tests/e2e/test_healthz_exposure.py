"""GET /healthz without auth reveals no paths or internals; an admin token sees them."""

from __future__ import annotations

import sys

import orjson

from tests.support.stack import TOKENS, Client, Stack

PUBLIC_KEYS = {"status", "uptime_seconds", "queue_depth", "plugins_loaded", "version", "components"}


async def test_anonymous_healthz_hides_paths(hr: Stack, client: Client) -> None:
    assert hr.config.path is not None
    for token in (None, TOKENS["jobs_ro"][0], "not-a-valid-token"):
        status, body = await client.get("/healthz", token=token)
        assert status == 200, body
        assert PUBLIC_KEYS <= set(body), body
        assert "config_path" not in body and "binary_path" not in body, body
        text = orjson.dumps(body).decode()
        assert str(hr.config.path.parent) not in text and sys.argv[0] not in text, text


async def test_admin_healthz_shows_paths(hr: Stack, client: Client) -> None:
    assert hr.config.path is not None
    status, body = await client.get("/healthz")
    assert status == 200
    assert body["config_path"] == str(hr.config.path.parent)
    assert body["binary_path"] == sys.argv[0]

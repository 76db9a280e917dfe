"""GET /config/view redaction (shared/spec/ductile-conformance.md §2.17; the reference's "Redaction
rules"): any key whose lower-cased name contains secret, key, token, password, api_key, credential,
auth or passwd is `[REDACTED]`, at any depth, in plugin config, schedule payloads and pipeline
`with`/`baggage` (so `keyboard_layout` and `author` are redacted too, as in Ductile); token values
are never shown, their scopes are."""

from __future__ import annotations

from typing import Any

from tests.support import stack as stack_mod
from tests.support.stack import Stack

R = "[REDACTED]"


async def test_sensitive_keys_are_redacted_everywhere(make_config: Any, start_stack: Any) -> None:
    plugins = {
        "echo": {
            "config": {
                "api_key": "k-123",
                "keyboard_layout": "dvorak",
                "author": "me",
                "message": "Hello",
                "nested": {"Password": "pw", "depth": {"credential_file": "/x", "plain": 1}},
                "passwd_hint": "h",
                "url": "https://example.com",
            },
            "schedules": [{"id": "s", "every": "1h", "payload": {"token": "t-1", "count": 2}}],
        },
        "echo_py": {},
    }
    pipelines = [
        {
            "name": "p",
            "on": "x.y",
            "steps": [
                {
                    "id": "one",
                    "uses": "echo",
                    "with": {"secret_sauce": "{payload.a}", "n": "{payload.n}"},
                    "baggage": {"auth_header": "payload.h"},
                }
            ],
        }
    ]
    hr: Stack = await start_stack(make_config(plugins=plugins, pipelines=pipelines))
    assert hr.client is not None
    status, body = await hr.client.get("/config/view")
    assert status == 200, body

    config = body["plugins"]["echo"]["config"]
    assert config["api_key"] == config["keyboard_layout"] == config["author"] == config["passwd_hint"] == R
    assert config["nested"]["Password"] == R and config["nested"]["depth"]["credential_file"] == R
    assert config["message"] == "Hello" and config["nested"]["depth"]["plain"] == 1
    assert config["url"] == "https://example.com"
    payload = body["plugins"]["echo"]["schedules"][0]["payload"]
    assert payload == {"token": R, "count": 2}
    step = body["pipelines"][0]["steps"][0]
    assert step["with"] == {"secret_sauce": R, "n": "{payload.n}"} and step["baggage"] == {"auth_header": R}

    tokens = body["api"]["auth"]["tokens"]
    assert [t["scopes"] for t in tokens] == [s for _, s in stack_mod.TOKENS.values()]
    shown = str(body)
    assert all(value not in shown for value, _ in stack_mod.TOKENS.values())
    assert "k-123" not in shown and "t-1" not in shown and "dvorak" not in shown


async def test_config_view_needs_a_system_scope(client: Any) -> None:
    """§2.17: system:ro, system:rw or * (narrow scopes are tested in test_narrow_scopes.py)."""
    assert (await client.get("/config/view", token=None))[0] == 401
    assert (await client.get("/config/view", token=stack_mod.TOKENS["jobs_rw"][0]))[0] == 403
    assert (await client.get("/config/view"))[0] == 200

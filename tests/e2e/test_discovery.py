"""Discovery over HTTP (plugins, plugin details, OpenAPI, skills, ai-plugin manifest) and the
scope matrix and input_schema validation of POST /plugin/{plugin}/{command}, on the real stack.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from openapi_spec_validator import validate

from tests.support.stack import TOKENS, Client, Stack

UNAUTHENTICATED = ("/plugins", "/skills", "/openapi.json", "/plugin/echo/openapi.json", "/.well-known/ai-plugin.json")
BARE_MANIFEST = {
    "name": "bare",
    "version": "2.0.0",
    "protocol": 2,
    "entrypoint": "run.py",
    "commands": [
        "ping",
        {
            "name": "fetch",
            "type": "read",
            "input_schema": {},
            "output_schema": {"type": "object"},
            "values": {"consume": ["payload.url"], "emit": [{"event": "content_ready", "values": ["url"]}]},
        },
    ],
}


def tok(name: str) -> str:
    return TOKENS[name][0]


@pytest.fixture
async def bare_hr(tmp_path: Path, make_config: Callable[..., Any], start_stack: Callable[..., Any]) -> Stack:
    """echo, echo_py and `bare` (a manifest without descriptions or schemas) plus pipelines."""
    root = tmp_path / "extra-plugins"
    (root / "bare").mkdir(parents=True)
    (root / "bare" / "manifest.yaml").write_text(yaml.safe_dump(BARE_MANIFEST))
    config = make_config(
        plugin_roots=[str(Path(__file__).resolve().parents[2] / "plugins"), str(root)],
        pipelines=[
            {"name": "p1", "on": "echo.handled", "steps": [{"uses": "echo"}]},
            {"name": "p2", "execution_mode": "synchronous", "timeout": "1m30s", "steps": [{"uses": "echo"}]},
            {"name": "p3", "execution_mode": "async", "timeout": 45, "steps": [{"uses": "echo"}]},
        ],
    )
    return await start_stack(config)


# --- /plugins and /plugin/{name} -------------------------------------------------------------------


async def test_plugins_lists_enabled_plugins_without_auth(client: Client) -> None:
    status, body = await client.get("/plugins", token=None)
    assert status == 200
    names = [p["name"] for p in body["plugins"]]
    assert names == sorted(names) and {"echo", "echo_py"} <= set(names)
    echo = next(p for p in body["plugins"] if p["name"] == "echo")
    assert echo == {
        "name": "echo",
        "version": "0.1.0",
        "description": "A demonstration plugin",
        "commands": ["poll", "handle", "health"],
    }


async def test_disabled_plugins_are_hidden_and_404(
    make_config: Callable[..., Any], start_stack: Callable[..., Any]
) -> None:
    hr = await start_stack(make_config(plugins={"echo": {"enabled": False}, "echo_py": {}}))
    client = hr.client
    assert client is not None
    _, body = await client.get("/plugins", token=None)
    assert "echo" not in [p["name"] for p in body["plugins"]]
    assert "echo_py" in [p["name"] for p in body["plugins"]]
    for path in ("/plugin/echo", "/plugin/echo/openapi.json"):
        status, err = await client.get(path)
        assert status == 404 and err["code"] == "not_found" and "disabled" in err["error"], (path, err)
    _, skills = await client.get("/skills", token=None)
    assert not [s for s in skills["skills"] if s.get("plugin") == "echo"]
    _, doc = await client.get("/openapi.json", token=None)
    assert not [p for p in doc["paths"] if p.startswith("/plugin/echo/")]


async def test_plugin_detail_shape(client: Client) -> None:
    status, body = await client.get("/plugin/echo", token=tok("plugin_ro"))
    assert status == 200
    assert {k: body[k] for k in ("name", "version", "description", "protocol")} == {
        "name": "echo",
        "version": "0.1.0",
        "description": "A demonstration plugin",
        "protocol": 2,
    }
    commands = {c["name"]: c for c in body["commands"]}
    assert list(commands) == ["poll", "handle", "health"]
    assert commands["poll"] == {
        "name": "poll",
        "type": "write",
        "description": "Emits echo.poll events",
        "input_schema": {"type": "object", "properties": {"message": {"type": "string"}}},
        "idempotent": False,
        "retry_safe": True,
    }
    assert commands["health"]["type"] == "read" and commands["health"]["idempotent"] is True
    assert commands["health"]["input_schema"] == {}


async def test_plugin_detail_exposes_values_and_output_schema(bare_hr: Stack) -> None:
    assert bare_hr.client is not None
    status, body = await bare_hr.client.get("/plugin/bare")
    assert status == 200
    assert body["description"] is None and body["version"] == "2.0.0"
    fetch = next(c for c in body["commands"] if c["name"] == "fetch")
    assert fetch["output_schema"] == {"type": "object"}
    assert fetch["values"] == BARE_MANIFEST["commands"][1]["values"]  # type: ignore[index]
    ping = next(c for c in body["commands"] if c["name"] == "ping")
    assert ping["type"] == "write" and ping["description"] is None
    assert "output_schema" not in ping and "values" not in ping


PLUGIN_DETAIL_SCOPES = [
    ("plugin_ro", 200),
    ("plugin_rw", 200),
    ("admin", 200),
    ("jobs_ro", 403),
    ("events_ro", 403),
    (None, 401),
    ("bad", 401),
]


def present(token: str | None) -> str | None:
    """The bearer token for a TOKENS key; "bad" is an unknown token, None sends none."""
    return None if token is None else ("not-a-known-token" if token == "bad" else tok(token))


async def test_plugin_detail_scopes(client: Client) -> None:
    for token, expected in PLUGIN_DETAIL_SCOPES:
        status, body = await client.get("/plugin/echo", token=present(token))
        assert status == expected, (token, body)
        if expected != 200:
            assert body["code"] == {401: "unauthorized", 403: "forbidden"}[expected]


async def test_unknown_plugin_detail_is_404(client: Client) -> None:
    status, body = await client.get("/plugin/nope")
    assert status == 404 and body["code"] == "not_found" and "nope" in body["error"]


# --- OpenAPI ---------------------------------------------------------------------------------------


async def test_plugin_openapi_matches_the_reference(client: Client) -> None:
    status, doc = await client.get("/plugin/echo/openapi.json", token=None)
    assert status == 200
    validate(doc)
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["title"] == "Headrace Gateway" and isinstance(doc["info"]["version"], str)
    assert set(doc["paths"]) == {"/plugin/echo/poll", "/plugin/echo/handle", "/plugin/echo/health"}
    poll = doc["paths"]["/plugin/echo/poll"]["post"]
    assert poll["operationId"] == "echo__poll"
    assert poll["summary"] == "Emits echo.poll events"
    assert poll["tags"] == ["echo"]
    # the body the API reads: {"payload": <input_schema>} (the reference's example shows the bare
    # input_schema, which the API would not read); optional, as the input_schema admits {}
    input_schema = {"type": "object", "properties": {"message": {"type": "string"}}}
    assert poll["requestBody"] == {
        "required": False,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"payload": {"anyOf": [input_schema, {"type": "null"}]}},
                    "anyOf": [{"required": ["payload"]}, {"maxProperties": 0}],
                }
            }
        },
    }
    assert {"202", "400", "403"} <= set(poll["responses"])
    assert poll["security"] == [{"BearerAuth": []}]
    assert "requestBody" not in doc["paths"]["/plugin/echo/health"]["post"]
    assert doc["components"]["securitySchemes"]["BearerAuth"] == {"type": "http", "scheme": "bearer"}


async def test_global_openapi_covers_every_enabled_plugin(client: Client) -> None:
    status, doc = await client.get("/openapi.json", token=None)
    assert status == 200
    validate(doc)
    assert {"/plugin/echo/poll", "/plugin/echo_py/poll", "/plugin/echo_py/health"} <= set(doc["paths"])
    operation_ids = [op["post"]["operationId"] for op in doc["paths"].values()]
    assert len(operation_ids) == len(set(operation_ids))


async def test_openapi_degrades_gracefully_without_descriptions_or_schemas(bare_hr: Stack) -> None:
    assert bare_hr.client is not None
    status, doc = await bare_hr.client.get("/plugin/bare/openapi.json", token=None)
    assert status == 200
    validate(doc)
    ping = doc["paths"]["/plugin/bare/ping"]["post"]
    assert ping["summary"] == "bare: ping" and "requestBody" not in ping
    fetch = doc["paths"]["/plugin/bare/fetch"]["post"]
    assert fetch["summary"] == "bare: fetch" and "requestBody" not in fetch  # input_schema: {} is no body
    _, everything = await bare_hr.client.get("/openapi.json", token=None)
    validate(everything)
    assert "/plugin/bare/ping" in everything["paths"]


async def test_unknown_plugin_openapi_is_404(client: Client) -> None:
    status, body = await client.get("/plugin/nope/openapi.json", token=None)
    assert status == 404 and body["code"] == "not_found"


async def test_discovery_endpoints_need_no_token(client: Client) -> None:
    for path in UNAUTHENTICATED:
        status, _ = await client.get(path, token=None)
        assert status == 200, path
        status, _ = await client.get(path, token="not-a-known-token")
        assert status == 200, path


async def test_ai_plugin_manifest(client: Client) -> None:
    status, body = await client.get("/.well-known/ai-plugin.json", token=None)
    assert status == 200
    assert body["schema_version"] == "v1"
    assert body["name_for_human"] == "Headrace Gateway" and body["name_for_model"] == "headrace"
    assert body["auth"] == {"type": "bearer"}
    assert body["api"] == {"type": "openapi", "url": "/openapi.json"}
    assert "/plugin/{name}/openapi.json" in body["description_for_model"]


# --- /skills ---------------------------------------------------------------------------------------


async def test_skills_lists_plugin_commands_with_tiers(client: Client) -> None:
    status, body = await client.get("/skills", token=None)
    assert status == 200
    skills = {s["name"]: s for s in body["skills"]}
    assert skills["plugin.echo.poll"] == {
        "name": "plugin.echo.poll",
        "kind": "plugin",
        "description": "Emits echo.poll events",
        "endpoint": "/plugin/echo/poll",
        "tier": "WRITE",
        "plugin": "echo",
        "command": "poll",
    }
    assert skills["plugin.echo.health"]["tier"] == "READ"
    assert skills["plugin.echo_py.handle"]["tier"] == "WRITE"
    assert not [s for s in body["skills"] if s["kind"] == "pipeline"]


async def test_skills_include_configured_pipelines(bare_hr: Stack) -> None:
    assert bare_hr.client is not None
    status, body = await bare_hr.client.get("/skills", token=None)
    assert status == 200
    pipelines = {s["name"]: s for s in body["skills"] if s["kind"] == "pipeline"}
    assert pipelines["pipeline.p1"] == {
        "name": "pipeline.p1",
        "kind": "pipeline",
        "endpoint": "/pipeline/p1",
        "pipeline": "p1",
        "trigger": "echo.handled",
        "execution_mode": "asynchronous",
        "timeout_secs": 30,  # the compiled default
    }
    assert pipelines["pipeline.p2"]["execution_mode"] == "synchronous"
    assert pipelines["pipeline.p2"]["timeout_secs"] == 90 and "trigger" not in pipelines["pipeline.p2"]  # omitempty
    assert pipelines["pipeline.p3"]["execution_mode"] == "asynchronous"
    assert pipelines["pipeline.p3"]["timeout_secs"] == 45
    bare = {s["name"]: s for s in body["skills"] if s.get("plugin") == "bare"}
    assert bare["plugin.bare.ping"]["description"] == "bare: ping" and bare["plugin.bare.ping"]["tier"] == "WRITE"
    assert bare["plugin.bare.fetch"]["tier"] == "READ"


# --- POST /plugin/{plugin}/{command}: scopes and input validation ----------------------------------


EXECUTION_SCOPES = [
    ("plugin_ro", "health", 202),
    ("plugin_ro", "poll", 403),
    ("plugin_rw", "health", 202),
    ("plugin_rw", "poll", 202),
    ("admin", "poll", 202),
    ("jobs_ro", "health", 403),
    ("jobs_ro", "poll", 403),
    ("events_ro", "health", 403),
    (None, "health", 401),
    ("bad", "poll", 401),
]


async def test_direct_execution_scope_matrix(client: Client) -> None:
    for token, command, expected in EXECUTION_SCOPES:
        status, body = await client.post(f"/plugin/echo/{command}", json={"payload": {}}, token=present(token))
        assert status == expected, (token, command, body)
        if expected == 202:
            assert body["status"] == "queued" and body["command"] == command
        else:
            assert body["code"] == {401: "unauthorized", 403: "forbidden"}[expected]


async def test_payload_violating_input_schema_is_400_with_violations(client: Client) -> None:
    status, body = await client.post("/plugin/echo/poll", json={"payload": {"message": 5}})
    assert status == 400
    assert body["code"] == "bad_request"
    assert body["error"] == "payload does not match the input_schema of echo.poll"
    assert len(body["violations"]) == 1
    assert body["violations"][0].startswith("message: ") and "string" in body["violations"][0]
    # the compiled validator is cached; a valid payload still passes
    status, body = await client.post("/plugin/echo/poll", json={"payload": {"message": "ok"}})
    assert status == 202, body
    status, body = await client.post("/plugin/echo/poll", json={"payload": {"message": 6}})
    assert status == 400 and body["violations"]


async def test_any_object_goes_without_a_schema(client: Client) -> None:
    for command in ("health", "handle"):  # no input_schema; {type: object}
        status, body = await client.post(f"/plugin/echo/{command}", json={"payload": {"anything": [1, 2]}})
        assert status == 202, (command, body)


async def test_payload_check_comes_after_scope_checks(client: Client) -> None:
    status, body = await client.post("/plugin/echo/poll", json={"payload": {"message": 5}}, token=tok("plugin_ro"))
    assert status == 403, body
    status, body = await client.post(
        "/plugin/echo/poll", data=b"{not json", token=tok("plugin_ro"), headers={"Content-Type": "application/json"}
    )
    assert status == 403, body
    status, body = await client.post("/plugin/nope/poll", json={"payload": {"message": 5}}, token=tok("jobs_ro"))
    assert status == 403, body


async def test_bad_bodies_are_400(client: Client) -> None:
    for raw in (b"{not json", b'{"payload": [1, 2]}', b'{"payload": "x"}', b"[1, 2]"):
        status, body = await client.post("/plugin/echo/poll", data=raw, headers={"Content-Type": "application/json"})
        assert status == 400 and body["code"] == "bad_request", (raw, body)


async def test_unknown_plugin_or_command_is_404_json(client: Client) -> None:
    for path in ("/plugin/nope/poll", "/plugin/echo/nope", "/plugin/echo/openapi.json"):
        status, body = await client.post(path, json={"payload": {}})
        assert status == 404 and body["code"] == "not_found", (path, body)

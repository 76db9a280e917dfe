"""The Laddr dialect's documents (laddr-conformance.md §0.1, route 29): GET /api/openapi.json is a valid
OpenAPI 3.1 document of every mounted `/`, /api/* and /ws/* route (request bodies, parameters, response
schemas, the X-API-Key / Bearer / api_key schemes, each operation's scopes as the guard's table says);
GET /docs is Swagger UI served from the package's own assets (nothing from a CDN); GET
/docs/oauth2-redirect; all open. GET /openapi.json stays Ductile's plugin-command document."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jsonschema
import pytest
from openapi_spec_validator import validate

from services.api import api_docs, laddr_openapi
from services.core import scopes
from services.core.version import version
from tests.support.stack import Stack


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def fetch(session: aiohttp.ClientSession, s: Stack, path: str) -> tuple[int, str, bytes]:
    async with session.get(s.url + path) as resp:  # no credentials: the documents are open
        return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


def validator(doc: dict[str, Any], schema_name: str) -> jsonschema.Draft202012Validator:
    """A validator of one component schema of `doc` (its $refs resolve inside the document)."""
    return jsonschema.Draft202012Validator(
        {"$ref": f"#/components/schemas/{schema_name}", "components": doc["components"]}
    )


async def test_api_openapi_json_is_a_valid_31_document_of_every_laddr_route(
    hr: Stack, session: aiohttp.ClientSession
) -> None:
    async with session.get(hr.url + "/api/openapi.json") as resp:
        assert resp.status == 200 and resp.content_type == "application/json"
        doc = await resp.json()
    validate(doc)  # the OpenAPI 3.1 meta-schema and the spec's rules ($refs resolve, path params declared)
    assert doc["openapi"] == "3.1.0" and doc["info"]["version"] == version()
    assert doc["components"]["securitySchemes"]["APIKeyHeader"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": doc["components"]["securitySchemes"]["APIKeyHeader"]["description"],
    }
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert doc["components"]["securitySchemes"]["APIKeyQuery"]["in"] == "query"

    assert hr.api.app is not None
    mounted = {
        (r.method, r.resource.canonical)
        for r in hr.api.app.router.routes()
        if r.resource is not None and r.method not in ("HEAD", "*")
    }
    laddr_routes = {(m, p) for m, p in mounted if p == "/" or p.startswith(("/api/", "/ws/"))}
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    assert laddr_routes - documented == set(), "routes missing from laddr_openapi.OPERATIONS"
    assert documented <= mounted  # nothing documented that would 404
    assert {
        "/api/jobs",
        "/api/prompts/{prompt_id}",
        "/api/traces",
        "/ws/events",
        "/ws/prompts/{prompt_id}",
        "/api/openapi.json",
    } <= set(doc["paths"])

    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            rule = scopes.route_rule(method.upper(), path)
            assert rule is not None, (method, path)
            assert op.get("x-scopes", []) == list(rule.any_of), (method, path)  # the guard's own table
            assert op["security"] == ([] if rule.open else op["security"]) and (rule.open or op["security"])
            for name in re.findall(r"\{(\w+)\}", path):
                assert any(p["in"] == "path" and p["name"] == name and p["required"] for p in op["parameters"])
            assert op["responses"], (method, path)
    jobs = doc["paths"]["/api/jobs"]
    assert jobs["post"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SubmitJob"
    }
    assert {p["name"] for p in jobs["get"]["parameters"]} == {"limit", "offset", "format"}  # format: the list's shape
    assert doc["components"]["schemas"]["SubmitJob"]["required"] == ["pipeline_name", "inputs"]
    events = doc["paths"]["/ws/events"]["get"]
    assert events["x-websocket"] is True and "101" in events["responses"] and "403" in events["responses"]
    # Laddr's three, and Headrace's `?token=` (as GET /events)
    assert {s for item in events["security"] for s in item} == {
        "APIKeyQuery",
        "APIKeyHeader",
        "HTTPBearer",
        "TokenQuery",
    }
    assert doc["paths"]["/api/health"]["get"]["security"] == [] and doc["paths"]["/"]["get"]["security"] == []


def test_the_table_describes_every_laddr_096_route_once_with_known_schemas() -> None:
    """Rows of routes another part mounts later are ready (the document shows them once mounted)."""
    refs = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                refs.add(node["$ref"].removeprefix("#/components/schemas/"))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for op in laddr_openapi.OPERATIONS:
        walk(op.render())
    walk(laddr_openapi.SCHEMAS)
    assert refs <= set(laddr_openapi.SCHEMAS), refs - set(laddr_openapi.SCHEMAS)
    assert len({op.key for op in laddr_openapi.OPERATIONS}) == len(laddr_openapi.OPERATIONS)
    # the routes of laddr-conformance.md §1.1 (1-28) are all described
    laddr_096 = {
        ("GET", "/"),
        ("GET", "/api/health"),
        ("POST", "/api/jobs"),
        ("GET", "/api/jobs/{job_id}"),
        ("GET", "/api/jobs"),
        ("POST", "/api/jobs/{job_id}/replay"),
        ("POST", "/api/prompts"),
        ("GET", "/api/prompts/{prompt_id}"),
        ("GET", "/api/prompts"),
        ("POST", "/api/prompts/{prompt_id}/cancel"),
        ("GET", "/api/agents"),
        ("GET", "/api/agents/{agent_name}/chat"),
        ("POST", "/api/agents/{agent_name}/batch"),
        ("POST", "/api/batches/{batch_id}/add-tasks"),
        ("GET", "/api/batches/{batch_id}"),
        ("GET", "/api/batches"),
        ("GET", "/api/agents/{agent_name}/tools"),
        ("GET", "/api/responses/{task_id}/resolved"),
        ("GET", "/api/traces"),
        ("GET", "/api/traces/grouped"),
        ("GET", "/api/traces/{trace_id}"),
        ("GET", "/api/metrics"),
        ("GET", "/api/logs/containers"),
        ("GET", "/api/logs/containers/{container_name}"),
        ("GET", "/ws/logs/{container_name}"),
        ("GET", "/ws/events"),
        ("GET", "/ws/prompts/{prompt_id}"),
        ("GET", "/ws/batches/{batch_id}"),
    }
    assert laddr_096 <= {op.key for op in laddr_openapi.OPERATIONS}


def test_the_websocket_messages_the_server_sends_match_their_schemas() -> None:
    """The shapes tests/conformance/laddr/test_websockets.py receives, against the document's schemas."""
    doc = api_docs.openapi_builder.document(
        [], [], info={"title": "t", "version": "1"}, schemas=laddr_openapi.SCHEMAS, security_schemes={}
    )
    span = {
        "id": 3,
        "name": "echo",
        "type": "tool",
        "start_time": "2026-12-02T06:33:15.945183Z",
        "agent": "a",
        "event_type": "tool_call",
        "input": {"m": 1},
        "output": None,
        "metadata": {"duration_ms": None, "tokens": None, "cost": None, "tool": "echo"},
        "children": [],
        "job_id": "j",
        "parent_id": 1,
    }
    root = {
        **span,
        "id": 1,
        "type": "agent",
        "event_type": "task_start",
        "name": "a",
        "parent_id": None,
        "children": [span],
    }
    trace = {
        "type": "trace",
        "data": {"job_id": "j", "agent_name": "a", "event_type": "task_start", "timestamp": "2026-12-02T06:33:15Z"},
    }
    good = {
        "WsTrace": trace,
        "WsBatch": {"type": "batch", "events": [trace, trace]},
        "WsTraces": {"type": "traces", "data": {"spans": [root], "count": 2}},
        "WsComplete": {
            "type": "complete",
            "data": {"status": "completed", "outputs": "x", "error": None, "spans": [root]},
        },
        "WsError": {"type": "error", "data": {"error": "Docker SDK not available"}},
    }
    for name, message in good.items():
        validator(doc, name).validate(message)
    bad = {**root, "children": [{**span, "type": "nonsense"}]}
    assert not validator(doc, "WsTraces").is_valid({"type": "traces", "data": {"spans": [bad], "count": 1}})
    assert not validator(doc, "WsTrace").is_valid({"type": "batch", "data": trace["data"]})


async def test_docs_is_swagger_ui_from_bundled_assets_over_the_laddr_document(
    hr: Stack, session: aiohttp.ClientSession
) -> None:
    status, ctype, body = await fetch(session, hr, "/docs")
    page = body.decode()
    assert status == 200 and ctype.startswith("text/html")
    assert "SwaggerUIBundle" in page and 'url: "/api/openapi.json"' in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "the page loads nothing from another host"
    assets = re.findall(r"""(?:src|href)="(/docs/static/[^"]+)\"""", page)
    assert len(assets) >= 4
    kinds = {".js": "javascript", ".css": "text/css", ".png": "image/png"}
    for path in assets:
        status, ctype, content = await fetch(session, hr, path)
        assert status == 200 and len(content) > 100, path
        assert kinds[path[path.rindex(".") :]] in ctype, (path, ctype)
    status, _, content = await fetch(session, hr, "/docs/static/swagger-ui-bundle.js")
    assert b"SwaggerUIBundle" in content
    for missing in ("/docs/static/nope.js", "/docs/static/..%2F..%2Futils.py", "/docs/static/oauth2-redirect.html"):
        status, _, _ = await fetch(session, hr, missing)
        assert status == 404, missing


async def test_docs_oauth2_redirect_is_swagger_uis_page(hr: Stack, session: aiohttp.ClientSession) -> None:
    status, ctype, body = await fetch(session, hr, "/docs/oauth2-redirect")
    assert status == 200 and ctype.startswith("text/html")
    assert b"swaggerUIRedirectOauth2" in body and b"<script" in body


async def test_openapi_json_stays_ductiles_plugin_command_document(hr: Stack, session: aiohttp.ClientSession) -> None:
    async with session.get(hr.url + "/openapi.json") as resp:
        assert resp.status == 200
        doc = await resp.json()
    assert doc["paths"] and all(p.startswith("/plugin/") for p in doc["paths"])
    status, _, _ = await fetch(session, hr, "/redoc")
    assert status == 404  # not served: no maintained package bundles ReDoc on its own

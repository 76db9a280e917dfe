"""The gateway's one OpenAPI document (GET /api/openapi.json) against the real app: every route the
router holds is in it (both dialects, the config's webhook, relay and vault routes too), nothing in it
would 404, it validates as OpenAPI 3.1, each operation's scopes are the guard's own table as `x-scopes`
and as security requirements, and requests built from its request schemas are accepted by the API
(answers that validate against its response schemas)."""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, datetime
from typing import Any

import jsonschema
import orjson
import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

from services.api import api_docs, ductile_openapi, guard, laddr_openapi, openapi_builder
from services.core import relay as relay_mod
from tests.support import vaults
from tests.support.stack import Stack

HOOK_SECRET = "gateway-doc-hook-secret"
RELAY_SECRET = "gateway-doc-relay-secret"
#: registered routes that are not API, so not documented (api_docs.NOT_DOCUMENTED says why)
NOT_API = frozenset(api_docs.NOT_DOCUMENTED)
VAULT_ADMIN = {"Authorization": f"Bearer {vaults.ADMIN_TOKEN}"}


@pytest.fixture
async def gateway(tmp_path: Any, make_config: Any, start_stack: Any, monkeypatch: pytest.MonkeyPatch) -> Stack:
    """A stack that mounts every kind of route: a pipeline, a webhook, the relay ingress and a vault."""
    monkeypatch.setenv("HR_TEST_GATEWAY_RELAY", RELAY_SECRET)
    made = vaults.make(tmp_path / "vault")
    return await start_stack(
        make_config(
            plugins={"echo": {}, "echo_py": {}},
            pipelines=[{"name": "shout", "steps": [{"id": "one", "uses": "echo.poll"}]}],
            secrets={"age_key_file": str(made.key), "vault_file": str(made.vault), "hook": HOOK_SECRET},
            webhooks=[{"name": "hook", "path": "/webhook/hook", "plugin": "echo", "secret_ref": "hook"}],
            remote_ingress={
                "listen_path": "/ingest/peer",
                "peers": [
                    {"name": "home", "enabled": True, "secret_ref": "HR_TEST_GATEWAY_RELAY", "accept": ["backup.ready"]}
                ],
            },
        )
    )


async def document(s: Stack) -> dict[str, Any]:
    assert s.client is not None
    status, doc = await s.client.get("/api/openapi.json", token=None)  # open, as Laddr's FastAPI document
    assert status == 200
    return doc


def operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(method.upper(), path): op for path, item in doc["paths"].items() for method, op in item.items()}


async def test_every_registered_route_is_documented_with_the_guards_scopes(gateway: Stack) -> None:
    doc = await document(gateway)
    validate(doc, cls=OpenAPIV31SpecValidator)  # the 3.1 meta-schema and the spec's rules ($refs resolve)
    assert doc["openapi"] == "3.1.0"
    assert "Ductile dialect" in doc["info"]["description"] and "Laddr dialect" in doc["info"]["description"]
    assert gateway.api.app is not None
    routes = {
        (r.method, r.resource.canonical): r
        for r in gateway.api.app.router.routes()
        if r.resource is not None and r.method not in ("HEAD", "*")  # HEAD: aiohttp's twin of each GET
    }
    left_out = {key for key in routes if key[1] in NOT_API}
    # the Swagger UI pages and assets (and the dashboard's, once mounted): nothing else is left out
    assert {"/docs", "/docs/oauth2-redirect", "/docs/static/{file}"} <= {path for _, path in left_out}
    ops = operations(doc)
    assert set(routes) - left_out - set(ops) == set(), "routes missing from the document"
    assert set(ops) <= set(routes), "documented routes that would 404"
    assert {("POST", "/webhook/hook"), ("POST", "/ingest/peer/{peer}"), ("POST", "/vault/secret/roll")} <= set(ops)
    assert len(ops) >= 60  # both dialects: ~35 Ductile and Headrace routes, ~30 Laddr ones

    schemes = doc["components"]["securitySchemes"]
    for key, op in ops.items():
        rule = guard.rule_of(routes[key])
        assert rule is not None, key
        assert op.get("x-scopes", []) == list(rule.any_of), key
        requirements = op["security"]
        named = {scheme for requirement in requirements for scheme in requirement}
        assert named <= set(schemes), key
        if rule.open and not (rule.webhook or rule.vault_admin):
            assert requirements == [], key  # public: /healthz, /plugins, /api/health, ...
        elif rule.any_of:
            # one requirement per (scheme, scope): each scope the guard admits, alone
            assert all(len(scopes_) == 1 for req in requirements for scopes_ in req.values()), key
            admitted = {scope for req in requirements for scopes_ in req.values() for scope in scopes_}
            assert admitted == {*rule.any_of, *rule.narrow}, key
            assert "HTTPBearer" in named, key
        else:  # a signature or the vault admin token authenticates
            assert requirements and all(scopes_ == [] for req in requirements for scopes_ in req.values()), key
        succeeds = any(code.startswith("2") or code == "101" for code in op["responses"])
        assert succeeds or key[1].startswith("/api/logs/containers"), key  # those are 503 by design (no Docker)
        for name in re.findall(r"\{(\w+)\}", key[1]):
            assert any(p["in"] == "path" and p["name"] == name for p in op.get("parameters", [])), key
    assert ops[("GET", "/job/{job_id}")]["security"] == [
        {"HTTPBearer": ["jobs:ro"]},
        {"HTTPBearer": ["jobs:status:ro"]},
    ]
    assert ops[("GET", "/system/doctor")]["x-scopes"] == ["system:ro", "system:rw"]
    assert {"APIKeyHeader", "HTTPBearer"} <= {s for r in ops[("GET", "/api/jobs")]["security"] for s in r}
    assert ops[("GET", "/events")]["responses"]["200"]["content"].keys() == {"text/event-stream"}
    assert ops[("POST", "/vault/principal")]["security"] == [{"VaultAdmin": []}]
    assert ops[("POST", "/webhook/hook")]["security"] == [{"WebhookSignature.X-Hub-Signature-256": []}]
    assert ops[("GET", "/healthz")]["security"] == [] and ops[("GET", "/")]["security"] == []
    assert {t["name"] for t in doc["tags"]} >= {"commands", "pipelines", "listings", "jobs", "prompts", "websockets"}


async def test_docs_browses_it_and_openapi_json_stays_ductiles(gateway: Stack) -> None:
    client = gateway.client
    assert client is not None
    status, root = await client.get("/", token=None)
    assert status == 200 and root["docs"] == "/docs"
    status, page = await client.get("/docs", token=None)
    assert status == 200 and 'url: "/api/openapi.json"' in page
    status, ductile = await client.get("/openapi.json", token=None)
    assert status == 200 and ductile["paths"]
    assert all(path.startswith("/plugin/") for path in ductile["paths"])  # one path per plugin command
    assert "/plugin/echo/poll" in ductile["paths"] and "/plugin/echo/poll" not in (await document(gateway))["paths"]


# --- requests built from the document --------------------------------------------------------------


def resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].removeprefix("#/components/schemas/")]
    return schema


def example(doc: dict[str, Any], schema: dict[str, Any]) -> Any:
    """The smallest instance of `schema`: defaults, the first branch of a choice, required keys only."""
    schema = resolve(doc, schema)
    if "default" in schema:
        return schema["default"]
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = kind[0]
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        required = {*schema.get("required", ()), *(schema.get("anyOf") or [{}])[0].get("required", ())}
        keys = [k for k in props if k in required or "default" in resolve(doc, props[k])]
        return {k: example(doc, props[k]) for k in keys}
    for choice in ("anyOf", "oneOf"):
        if choice in schema:
            return example(doc, schema[choice][0])
    if kind == "array":
        return [example(doc, schema.get("items", {})) for _ in range(schema.get("minItems", 0))]
    if kind == "string":
        return "x" * max(1, schema.get("minLength", 1))
    if kind in ("integer", "number"):
        return schema.get("minimum", 0)
    if kind == "boolean":
        return False
    return None


def request_body(doc: dict[str, Any], op: dict[str, Any], **override: Any) -> bytes:
    """The example of the operation's JSON body with `override`'s keys, checked against the schema."""
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    built = example(doc, schema)
    body = {**built, **override} if override else built
    jsonschema.Draft202012Validator({**schema, "components": doc["components"]}).validate(body)
    return orjson.dumps(body)


def query(doc: dict[str, Any], op: dict[str, Any]) -> str:
    """Every query parameter with a default, at its default."""
    pairs = []
    for param in op.get("parameters", []):
        schema = resolve(doc, param["schema"])
        schema = schema["anyOf"][0] if "anyOf" in schema and "default" not in schema else schema
        if param["in"] == "query" and "default" in schema:
            value = schema["default"]
            pairs.append(f"{param['name']}={str(value).lower() if isinstance(value, bool) else value}")
    return "?" + "&".join(pairs) if pairs else ""


def check_answer(doc: dict[str, Any], op: dict[str, Any], status: int, body: Any) -> None:
    """The answer is one the operation documents, in the documented shape."""
    documented = op["responses"].get(str(status))
    assert documented is not None, (status, body)
    schema = documented["content"]["application/json"]["schema"]
    jsonschema.Draft202012Validator(
        {**schema, "components": doc["components"]}, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(body)


async def test_requests_built_from_the_request_schemas_are_accepted(gateway: Stack) -> None:
    client = gateway.client
    assert client is not None
    doc = await document(gateway)
    ops = operations(doc)

    async def send(
        method: str, template: str, path: str, body: bytes | None = None, *, ok: int, **kw: Any
    ) -> dict[str, Any]:
        op = ops[(method, template)]
        status, answer = await client.request(method, path + query(doc, op), data=body, **kw)
        assert status == ok, (method, path, status, answer)
        check_answer(doc, op, status, answer)
        return answer

    json_type = {"Content-Type": "application/json"}
    command = ops[("POST", "/plugin/{plugin}/{command}")]
    queued = await send(
        "POST",
        "/plugin/{plugin}/{command}",
        "/plugin/echo/poll",
        request_body(doc, command, payload={"message": "from the document"}),
        ok=202,
        headers=json_type,
    )
    await send("POST", "/plugin/{plugin}/{command}", "/plugin/echo/poll", request_body(doc, command), ok=202)
    pipeline = ops[("POST", "/pipeline/{name}")]
    await send("POST", "/pipeline/{name}", "/pipeline/shout", request_body(doc, pipeline), ok=202, headers=json_type)
    laddr_job = ops[("POST", "/api/jobs")]
    await send("POST", "/api/jobs", "/api/jobs", request_body(doc, laddr_job, pipeline_name="shout"), ok=200)
    done = await client.wait_job(queued["job_id"])
    check_answer(doc, ops[("GET", "/job/{job_id}")], 200, done)
    await send("GET", "/jobs", "/jobs", ok=200)
    await send("GET", "/job-logs", "/job-logs", ok=200)
    await send("GET", "/api/jobs", "/api/jobs", ok=200)
    await send("GET", "/job/{job_id}/tree", f"/job/{queued['job_id']}/tree", ok=200)
    await send("GET", "/healthz", "/healthz", ok=200, token=None)
    await send("GET", "/", "/", ok=200, token=None)
    await send("POST", "/job/{job_id}/cancel", f"/job/{queued['job_id']}/cancel", ok=409)  # already final
    # the read routes' answers, with a job and a pipeline run in the read models, in the documented shapes
    for path in (
        "/plugins",
        "/plugin/echo",
        "/skills",
        "/openapi.json",
        "/.well-known/ai-plugin.json",
        "/analytics/queue",
        "/analytics/summary",
        "/config/view",
        "/scheduler/jobs",
        "/events/rejected",
        "/system/doctor",
        "/system/selfcheck",
        "/topology",
        "/stopwatch/echo",
        "/api/health",
    ):
        template = "/plugin/{name}" if path == "/plugin/echo" else path
        template = "/stopwatch/{plugin}" if path == "/stopwatch/echo" else template
        await send("GET", template, path, ok=200)
    await send("GET", "/api/jobs/{job_id}", f"/api/jobs/{queued['job_id']}", ok=200)

    secret = ops[("POST", "/vault/secret")]
    await send(
        "POST",
        "/vault/secret",
        "/vault/secret",
        request_body(doc, secret, name="from-the-document", value="v"),
        ok=200,
        token=None,
        headers={**VAULT_ADMIN, **json_type},
    )

    hook_body = request_body(doc, ops[("POST", "/webhook/hook")])  # any JSON value: the smallest is a string
    signature = "sha256=" + hmac.new(HOOK_SECRET.encode(), hook_body, hashlib.sha256).hexdigest()
    await send(
        "POST",
        "/webhook/hook",
        "/webhook/hook",
        hook_body,
        ok=202,
        token=None,
        headers={"X-Hub-Signature-256": signature, **json_type},
    )

    relay = ops[("POST", "/ingest/peer/{peer}")]
    envelope = request_body(doc, relay, event={"type": "backup.ready"})
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    headers = {
        relay_mod.HEADER_PEER: "home",
        relay_mod.HEADER_TIMESTAMP: stamp,
        relay_mod.HEADER_SIGNATURE: relay_mod.sign("POST", "/ingest/peer/home", stamp, envelope, RELAY_SECRET),
        **json_type,
    }
    assert {p["name"] for p in relay["parameters"] if p["in"] == "header" and p["required"]} <= set(headers)
    await send("POST", "/ingest/peer/{peer}", "/ingest/peer/home", envelope, ok=202, token=None, headers=headers)


def test_every_row_renders_into_a_valid_document_mounted_or_not() -> None:
    """Rows whose routes the test stacks never mount (or that land later, as GET /metrics) are valid too."""
    rows = [*ductile_openapi.OPERATIONS, *laddr_openapi.OPERATIONS, ductile_openapi.webhook_operation("/hook", None)]
    rows.append(ductile_openapi.relay_operation("/relay/{peer}"))
    assert len({row.key for row in rows}) == len(rows), "a route described twice"
    doc = openapi_builder.document(
        rows,
        [row.key for row in rows],
        info={"title": "t", "version": "1"},
        schemas=openapi_builder.merged(ductile_openapi.SCHEMAS, laddr_openapi.SCHEMAS),
        security_schemes=openapi_builder.merged(
            ductile_openapi.SECURITY_SCHEMES,
            {"WebhookSignature.X-Hub-Signature-256": ductile_openapi.webhook_scheme("X-Hub-Signature-256")},
            laddr_openapi.SECURITY_SCHEMES,
        ),
    )
    validate(doc, cls=OpenAPIV31SpecValidator)
    assert len(operations(doc)) == len(rows)
    for row in rows:  # a route the scope table gates is never documented as open
        rule = row.rule()
        if rule is not None and not rule.open:
            assert row.security, row.key

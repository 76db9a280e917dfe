"""The Laddr dialect policy (services/api/laddr_dialect.py, auth.py, laddr_system.py) through real HTTP:
one test per behaviour row of /work/shared/spec/laddr-conformance.md §2 (auth), §0.2 (error shapes),
§1.1 (status codes), §1.3/§1.4/§1.18 (GET /, /api/health, container logs), and the rows of
issue 12's dialect part (Laddr's key from LADDR_API_KEY or api.laddr, the keyless opt-in)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml

from services.core import config as config_mod
from services.core import errors, scopes
from tests.support import laddr as laddr_support
from tests.support import stack
from tests.support.stack import TOKENS, Stack

KEY = "laddr-test-key-0001"
BEARER_RIGHT = {"Authorization": f"Bearer {KEY}"}
API_KEY_RIGHT = {"X-API-Key": KEY}
UNKNOWN = "00000000-0000-4000-8000-000000000000"
UNAUTHORIZED = "Invalid or missing API key"


def _doc(laddr: dict[str, Any] | None = None, api: dict[str, Any] | None = None) -> dict[str, Any]:
    doc = stack.config_doc(
        plugins=laddr_support.plugins(),
        agents={"echo": laddr_support.agent(None, "echo")},
        pipelines=[{"name": "shout", "steps": [{"id": "one", "uses": "echo.poll"}]}],  # needs plugin:rw
    )
    doc["api"].update(api or {})
    if laddr is not None:
        doc["api"]["laddr"] = laddr
    return doc


@pytest.fixture
def laddr_config(tmp_path: Path, nats_url: str, database_url: str) -> Callable[..., config_mod.Config]:
    """Factory: a config with an offline `echo` agent and `api.laddr` as given, loaded with `env` added
    to the process environment (as the sealed environment would hold it)."""
    counter = iter(range(100))

    def make(
        laddr: dict[str, Any] | None = None, env: dict[str, str] | None = None, api: dict[str, Any] | None = None
    ) -> config_mod.Config:
        path = tmp_path / f"laddr-{next(counter)}.yaml"
        path.write_text(yaml.safe_dump(_doc(laddr, api), sort_keys=False))
        environ = {**os.environ, "NATS_URL": nats_url, "DATABASE_URL": database_url, **(env or {})}
        return config_mod.load(path, env=environ)

    return make


@pytest.fixture
async def keyed(laddr_config: Callable[..., config_mod.Config], start_stack: Any) -> Stack:
    """A Laddr-style deployment: the key comes from LADDR_API_KEY, nothing in api.auth.tokens names it."""
    return await start_stack(laddr_config(env={"LADDR_API_KEY": KEY}))


async def call(
    s: Stack,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    json: Any = None,
    data: bytes | None = None,
) -> tuple[int, Any, Any]:
    """(status, headers, JSON body) of one request sent with exactly `headers` (no default token)."""
    hdrs = dict(headers or {})
    if json is not None:
        data = orjson.dumps(json)
    if data is not None:
        hdrs.setdefault("Content-Type", "application/json")
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, s.url + path, headers=hdrs, data=data) as resp,
    ):
        raw = await resp.read()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = raw.decode("utf-8", "replace")
        return resp.status, resp.headers, body


def assert_unauthorized(status: int, headers: Any, body: Any) -> None:
    assert status == 401, body
    assert body["detail"] == UNAUTHORIZED and body["code"] == "unauthorized" and body["error"], body
    assert "WWW-Authenticate" not in headers


def assert_validation(status: int, body: Any, *, type_: str, loc: list[Any], input_: Any = ...) -> dict[str, Any]:
    """FastAPI's 422: one item {type, loc, msg, input}, Headrace's `error`/`code` beside it."""
    assert status == 422, body
    assert isinstance(body["detail"], list) and len(body["detail"]) == 1, body
    item = body["detail"][0]
    assert {"type", "loc", "msg", "input"} <= item.keys(), item
    assert item["type"] == type_ and item["loc"] == loc, item
    if input_ is not ...:
        assert item["input"] == input_, item
    assert body["error"] and body["code"] == "bad_request", body
    return item


# --- §2 authentication ---------------------------------------------------------------------------------


async def test_no_credentials_is_401_invalid_or_missing_api_key(keyed: Stack) -> None:
    assert_unauthorized(*await call(keyed, "GET", "/api/jobs"))


async def test_right_x_api_key_authenticates(keyed: Stack) -> None:
    status, _, body = await call(keyed, "GET", "/api/jobs", headers=API_KEY_RIGHT)
    assert status == 200 and isinstance(body, list), body


async def test_right_bearer_authenticates(keyed: Stack) -> None:
    status, _, body = await call(keyed, "GET", "/api/agents", headers=BEARER_RIGHT)
    assert status == 200 and [a["name"] for a in body["agents"]] == ["echo"], body


async def test_wrong_x_api_key_is_401(keyed: Stack) -> None:
    assert_unauthorized(*await call(keyed, "GET", "/api/jobs", headers={"X-API-Key": "not-the-key-000"}))


async def test_wrong_x_api_key_beside_right_bearer_is_401_only_x_api_key_counts(keyed: Stack) -> None:
    assert_unauthorized(
        *await call(keyed, "GET", "/api/jobs", headers={"X-API-Key": "not-the-key-000", **BEARER_RIGHT})
    )


async def test_right_x_api_key_beside_wrong_bearer_authenticates(keyed: Stack) -> None:
    status, _, body = await call(
        keyed, "GET", "/api/metrics", headers={**API_KEY_RIGHT, "Authorization": "Bearer wrong-token-000"}
    )
    assert status == 200 and "total_jobs" in body, body


async def test_empty_x_api_key_falls_back_to_bearer(keyed: Stack) -> None:
    # Laddr: `api_key = request.headers.get("X-API-Key"); if not api_key: <Bearer>`
    status, _, body = await call(keyed, "GET", "/api/jobs", headers={"X-API-Key": "", **BEARER_RIGHT})
    assert status == 200, body


async def test_lower_case_bearer_is_accepted_as_headrace_does(keyed: Stack) -> None:
    # a deliberate superset: Laddr refuses `bearer <key>`; Headrace has always accepted the scheme in any case
    status, _, body = await call(keyed, "GET", "/api/jobs", headers={"Authorization": f"bearer {KEY}"})
    assert status == 200, body


async def test_api_key_in_the_query_is_not_accepted_over_http(keyed: Stack) -> None:
    assert_unauthorized(*await call(keyed, "GET", f"/api/jobs?api_key={KEY}"))


async def test_x_api_key_is_not_a_credential_on_ductile_routes(keyed: Stack) -> None:
    status, _, body = await call(keyed, "GET", "/jobs", headers=API_KEY_RIGHT)
    assert status == 401 and body == {
        "error": "missing bearer token (Authorization: Bearer <token>)",
        "code": "unauthorized",
    }, body
    status, _, body = await call(keyed, "GET", "/jobs", headers=BEARER_RIGHT)  # the key is a token like any
    assert status == 200, body


async def test_invalid_body_without_credentials_is_401_before_validation(keyed: Stack) -> None:
    assert_unauthorized(*await call(keyed, "POST", "/api/jobs", json={}))


async def test_malformed_json_without_credentials_is_401_not_422(keyed: Stack) -> None:
    # Laddr parses the body before the key (422); Headrace authenticates before reading a body (a
    # deliberate difference: nothing of an unauthenticated request is parsed)
    assert_unauthorized(*await call(keyed, "POST", "/api/jobs", data=b"{bad"))


async def test_open_routes_need_no_key(keyed: Stack) -> None:
    for path in ("/", "/api/health"):
        status, _, body = await call(keyed, "GET", path)
        assert status == 200, (path, body)


async def test_laddr_key_gets_default_scopes_enough_for_every_api_route_and_agent_work(keyed: Stack) -> None:
    token = next(t for t in keyed.config.api.tokens if t.name == "laddr")
    assert token.token == KEY and token.scopes == scopes.laddr_default_scopes()
    assert {"jobs:rw", "plugin:rw"} <= token.scopes and "*" not in token.scopes
    for (method, path), rule in scopes.ROUTES.items():
        if path.startswith(("/api/", "/ws/")) and rule.any_of:
            assert scopes.grants_any(token.scopes, rule.any_of), (method, path)
    for name in ("echo", "shout"):  # an agent, and a pipeline (plugin:rw)
        status, _, body = await call(
            keyed, "POST", "/api/jobs", headers=API_KEY_RIGHT, json={"pipeline_name": name, "inputs": {"message": "hi"}}
        )
        assert status == 200 and body["job_id"], body
        assert (await keyed.client.wait_job(body["job_id"]))["status"] == "succeeded", name
    status, _, body = await call(keyed, "GET", "/config/view", headers=BEARER_RIGHT)  # not an admin
    assert status == 403, body


async def test_laddr_key_and_scopes_from_the_config_file(
    laddr_config: Callable[..., config_mod.Config], start_stack: Any
) -> None:
    s = await start_stack(laddr_config({"api_key": KEY, "scopes": ["jobs:ro"]}))
    status, _, body = await call(s, "GET", "/api/jobs", headers=API_KEY_RIGHT)
    assert status == 200, body
    status, _, body = await call(
        s, "POST", "/api/jobs", headers=API_KEY_RIGHT, json={"pipeline_name": "echo", "inputs": {}}
    )
    assert status == 403 and body["code"] == "forbidden" and body["detail"], body


async def test_a_reload_rotates_the_laddr_key_and_its_keyless_mode(
    laddr_config: Callable[..., config_mod.Config], start_stack: Any
) -> None:
    config = laddr_config({"api_key": KEY})
    s = await start_stack(config)
    assert (await call(s, "GET", "/api/jobs", headers=API_KEY_RIGHT))[0] == 200
    rotated = "laddr-rotated-key-02"
    assert config.path is not None
    config.path.write_text(yaml.safe_dump(_doc({"api_key": rotated}), sort_keys=False))
    status, body = await s.client.post("/system/reload")
    assert status == 200, body
    assert_unauthorized(*await call(s, "GET", "/api/jobs", headers=API_KEY_RIGHT))
    assert (await call(s, "GET", "/api/jobs", headers={"X-API-Key": rotated}))[0] == 200
    assert_unauthorized(*await call(s, "GET", "/api/jobs"))
    config.path.write_text(yaml.safe_dump(_doc({"auth": "none"}), sort_keys=False))
    status, body = await s.client.post("/system/reload")
    assert status == 200, body
    assert (await call(s, "GET", "/api/jobs"))[0] == 200  # keyless from now on
    assert_unauthorized(*await call(s, "GET", "/api/jobs", headers={"X-API-Key": rotated}))  # that key is gone


def test_config_file_key_wins_over_the_environment(laddr_config: Callable[..., config_mod.Config]) -> None:
    config = laddr_config({"api_key": KEY}, env={"LADDR_API_KEY": "from-the-environment"})
    assert [t.token for t in config.api.tokens if t.name == "laddr"] == [KEY]


def test_a_listed_token_with_the_same_value_keeps_its_scopes() -> None:
    admin = TOKENS["admin"][0]
    config = config_mod.from_dict(stack.config_doc(), env={"LADDR_API_KEY": admin})
    assert [t.scopes for t in config.api.tokens if t.token == admin] == [frozenset({"*"})]


def test_a_short_laddr_key_is_a_config_error_naming_no_value() -> None:
    with pytest.raises(errors.ConfigError, match="LADDR_API_KEY: a Laddr key must have at least 8") as caught:
        config_mod.from_dict(stack.config_doc(), env={"LADDR_API_KEY": "short"})
    assert "short" not in str(caught.value).replace("shorter", "")


def test_keyless_and_a_key_together_is_a_config_error() -> None:
    with pytest.raises(errors.ConfigError, match="contradicts"):
        config_mod.from_dict({**stack.config_doc(), "api": {"laddr": {"auth": "none", "api_key": KEY}}}, env={})
    with pytest.raises(errors.ConfigError, match="contradicts"):
        config_mod.from_dict({**stack.config_doc(), "api": {"laddr": {"auth": "none"}}}, env={"LADDR_API_KEY": KEY})


def test_keyless_is_never_the_default() -> None:
    config = config_mod.from_dict(stack.config_doc(), env={})
    assert config.api.laddr.open is False and config.api.laddr.api_key is None
    assert all(t.name != "laddr" for t in config.api.tokens)


async def test_keyless_opt_in_serves_laddr_paths_without_credentials_only(
    laddr_config: Callable[..., config_mod.Config], start_stack: Any
) -> None:
    s = await start_stack(laddr_config({"auth": "none"}))
    status, _, body = await call(s, "GET", "/api/jobs")
    assert status == 200 and body == [], body
    status, _, body = await call(s, "POST", "/api/jobs", json={"pipeline_name": "echo", "inputs": {"message": "x"}})
    assert status == 200 and body["status"] == "queued", body
    assert_unauthorized(*await call(s, "GET", "/api/jobs", headers={"X-API-Key": "not-a-token-000"}))
    status, _, body = await call(s, "GET", "/jobs")  # Ductile's routes keep their tokens
    assert status == 401, body


# --- status codes --------------------------------------------------------------------------------------


async def test_work_queued_is_200_not_202(keyed: Stack) -> None:
    status, _, body = await call(
        keyed, "POST", "/api/prompts", headers=API_KEY_RIGHT, json={"prompt_name": "echo", "inputs": {"task": "x"}}
    )
    assert status == 200 and body["prompt_id"], body
    prompt_id = body["prompt_id"]
    status, _, body = await call(keyed, "GET", "/api/agents/echo/chat?message=hi&wait=false", headers=API_KEY_RIGHT)
    assert status == 200 and body["status"] == "submitted", body
    assert keyed.client is not None  # none left waiting on a child when the stack stops
    for job_id in (prompt_id, body["task_id"]):
        await keyed.client.wait_job(job_id, timeout_s=30)


async def test_idempotent_replay_of_a_queued_answer_is_200_too(keyed: Stack) -> None:
    headers = {**API_KEY_RIGHT, "Idempotency-Key": "dialect-once"}
    payload = {"pipeline_name": "echo", "inputs": {"message": "once"}}
    first = await call(keyed, "POST", "/api/jobs", headers=headers, json=payload)
    again = await call(keyed, "POST", "/api/jobs", headers=headers, json=payload)
    assert first[0] == again[0] == 200 and first[2] == again[2], (first, again)
    assert again[1].get("Idempotent-Replayed") == "true"


async def test_ductile_routes_keep_202(keyed: Stack) -> None:
    status, _, body = await call(
        keyed, "POST", "/plugin/echo/poll", headers=BEARER_RIGHT, json={"payload": {"message": "m"}}
    )
    assert status == 202 and "detail" not in body, body


# --- §0.2 error shapes ---------------------------------------------------------------------------------


async def test_unknown_api_path_is_404_not_found(keyed: Stack) -> None:
    status, _, body = await call(keyed, "GET", "/api/nothing", headers=API_KEY_RIGHT)
    assert status == 404 and body["detail"] == "Not Found" and body["code"] == "not_found", body


async def test_wrong_method_is_405_method_not_allowed_with_allow(keyed: Stack) -> None:
    for method, path in (("PUT", "/api/jobs"), ("DELETE", f"/api/jobs/{UNKNOWN}"), ("POST", "/api/agents/echo/chat")):
        status, headers, body = await call(keyed, method, path, headers=API_KEY_RIGHT)
        assert status == 405 and body["detail"] == "Method Not Allowed", (method, path, body)
        assert body["code"] == "method_not_allowed" and "GET" in headers["Allow"], (method, path, headers)


async def test_ductile_404_and_405_keep_their_bodies(keyed: Stack) -> None:
    status, _, body = await call(keyed, "GET", "/nothing", headers=BEARER_RIGHT)
    assert status == 404 and body == {"error": "no route for GET /nothing", "code": "not_found"}, body
    status, headers, body = await call(keyed, "PUT", "/jobs", headers=BEARER_RIGHT)
    assert status == 405 and "detail" not in body and headers["Allow"], body


@pytest.mark.parametrize(
    ("path", "text"),
    [
        (f"/api/jobs/{UNKNOWN}", "Job not found"),
        (f"/api/prompts/{UNKNOWN}", "Prompt execution not found"),
        ("/api/traces/999999999", "Trace not found"),
        ("/api/responses/no-such-task/resolved", "Response not found or expired"),
        ("/api/agents/ghost/chat?message=hi", "Agent not found"),
    ],
)
async def test_unknown_resource_is_404_with_laddrs_text(keyed: Stack, path: str, text: str) -> None:
    status, _, body = await call(keyed, "GET", path, headers=API_KEY_RIGHT)
    assert status == 404 and body["detail"] == text, body
    assert body["code"] == "not_found" and body["error"] != text, body  # Headrace's message beside Laddr's


async def test_validation_missing_field_is_422_missing_at_body_field(keyed: Stack) -> None:
    status, _, body = await call(keyed, "POST", "/api/jobs", headers=API_KEY_RIGHT, json={"inputs": {}})
    item = assert_validation(status, body, type_="missing", loc=["body", "pipeline_name"], input_={"inputs": {}})
    assert item["msg"] == "Field required" and body["field"] == "pipeline_name"


async def test_validation_wrong_type_string_is_422_string_type(keyed: Stack) -> None:
    status, _, body = await call(
        keyed, "POST", "/api/jobs", headers=API_KEY_RIGHT, json={"pipeline_name": 5, "inputs": {}}
    )
    assert_validation(status, body, type_="string_type", loc=["body", "pipeline_name"], input_=5)


async def test_validation_wrong_type_dict_is_422_dict_type(keyed: Stack) -> None:
    status, _, body = await call(
        keyed, "POST", "/api/jobs", headers=API_KEY_RIGHT, json={"pipeline_name": "echo", "inputs": "add"}
    )
    item = assert_validation(status, body, type_="dict_type", loc=["body", "inputs"], input_="add")
    assert item["msg"] == "Input should be a valid dictionary"


async def test_validation_wrong_type_list_is_422_list_type(keyed: Stack) -> None:
    status, _, body = await call(
        keyed,
        "POST",
        "/api/prompts",
        headers=API_KEY_RIGHT,
        json={"prompt_name": "echo", "inputs": {}, "agents": "echo"},
    )
    assert_validation(status, body, type_="list_type", loc=["body", "agents"], input_="echo")


async def test_validation_wrong_type_bool_is_422_bool_parsing(keyed: Stack) -> None:
    status, _, queued = await call(
        keyed, "POST", "/api/jobs", headers=API_KEY_RIGHT, json={"pipeline_name": "echo", "inputs": {"message": "r"}}
    )
    await keyed.client.wait_job(queued["job_id"])
    await laddr_support.projected(keyed)
    status, _, body = await call(
        keyed, "POST", f"/api/jobs/{queued['job_id']}/replay", headers=API_KEY_RIGHT, json={"reexecute": "maybe"}
    )
    assert_validation(status, body, type_="bool_parsing", loc=["body", "reexecute"], input_="maybe")


async def test_validation_query_int_is_422_int_parsing(keyed: Stack) -> None:
    for path in ("/api/jobs?limit=abc", "/api/prompts?limit=abc", "/api/traces?limit=abc"):
        status, _, body = await call(keyed, "GET", path, headers=API_KEY_RIGHT)
        item = assert_validation(status, body, type_="int_parsing", loc=["query", "limit"], input_="abc")
        assert item["msg"] == "Input should be a valid integer, unable to parse string as an integer"
        assert body["parameter"] == "limit"


async def test_validation_query_bound_is_422_greater_than_equal(keyed: Stack) -> None:
    # (a negative `offset` is accepted as 0, as Laddr accepts it: the bound checked is `limit`'s)
    status, _, body = await call(keyed, "GET", "/api/traces?limit=0", headers=API_KEY_RIGHT)
    item = assert_validation(status, body, type_="greater_than_equal", loc=["query", "limit"], input_="0")
    assert item["ctx"] == {"ge": 1} and item["msg"] == "Input should be greater than or equal to 1"


async def test_validation_no_body_is_422_missing_at_body(keyed: Stack) -> None:
    status, _, body = await call(keyed, "POST", "/api/jobs", headers=API_KEY_RIGHT)
    assert_validation(status, body, type_="missing", loc=["body"], input_=None)


async def test_validation_malformed_json_is_422_json_invalid(keyed: Stack) -> None:
    status, _, body = await call(keyed, "POST", "/api/jobs", headers=API_KEY_RIGHT, data=b"{bad")
    item = assert_validation(status, body, type_="json_invalid", loc=["body", 1], input_={})
    assert item["msg"] == "JSON decode error" and item["ctx"]["error"], item


async def test_validation_body_not_an_object_is_422_model_attributes_type(keyed: Stack) -> None:
    status, _, body = await call(keyed, "POST", "/api/jobs", headers=API_KEY_RIGHT, json=[1, 2])
    assert_validation(status, body, type_="model_attributes_type", loc=["body"], input_=[1, 2])


async def test_a_refusal_of_a_well_typed_value_is_422_value_error(keyed: Stack) -> None:
    status, _, body = await call(
        keyed,
        "POST",
        "/api/prompts",
        headers=API_KEY_RIGHT,
        json={"prompt_name": "echo", "inputs": {}, "mode": "parallel"},
    )
    item = assert_validation(status, body, type_="value_error", loc=["body", "mode"], input_="parallel")
    assert item["msg"].startswith("Value error, ") and "mode" in item["msg"]


async def test_an_unlocated_400_stays_400_with_detail(keyed: Stack) -> None:
    status, _, body = await call(
        keyed,
        "POST",
        "/api/jobs",
        headers={**API_KEY_RIGHT, "Idempotency-Key": " "},
        json={"pipeline_name": "echo", "inputs": {}},
    )
    assert status == 400 and body["detail"] == body["error"] and body["code"] == "bad_request", body


async def test_other_errors_keep_their_status_and_gain_detail(keyed: Stack) -> None:
    status, _, body = await call(
        keyed, "POST", "/api/jobs", headers=API_KEY_RIGHT, json={"pipeline_name": "ghost", "inputs": {}}
    )
    assert status == 404 and body["detail"] == body["error"] and body["agents"] == ["echo"], body  # never a 500


async def test_ductile_validation_errors_keep_their_400_bodies(keyed: Stack) -> None:
    status, _, body = await call(keyed, "GET", "/jobs?limit=abc", headers=BEARER_RIGHT)
    assert status == 400 and body == {
        "error": "query parameter 'limit' must be an integer",
        "code": "bad_request",
        "parameter": "limit",
    }, body


async def test_errors_made_outside_the_error_middleware_gain_detail_too(
    laddr_config: Callable[..., config_mod.Config], start_stack: Any
) -> None:
    s = await start_stack(
        laddr_config(env={"LADDR_API_KEY": KEY}, api={"limits": {"rate": {"per_second": 0.01, "burst": 1}}})
    )
    assert (await call(s, "GET", "/api/jobs", headers=API_KEY_RIGHT))[0] == 200
    status, headers, body = await call(s, "GET", "/api/jobs", headers=API_KEY_RIGHT)
    assert status == 429 and body["code"] == "rate_limited" and body["detail"] == body["error"], body
    assert headers["Retry-After"]
    status, _, body = await call(s, "GET", "/jobs", headers=BEARER_RIGHT)  # the same bucket, Ductile's body
    assert status == 429 and "detail" not in body, body


# --- GET /, /api/health, container logs ----------------------------------------------------------------


async def test_root_has_laddrs_keys_among_headraces(keyed: Stack) -> None:
    status, _, body = await call(keyed, "GET", "/")
    assert status == 200, body
    assert {"service", "version", "status", "dashboard", "docs"} <= body.keys(), body
    assert all(isinstance(body[k], str) for k in ("service", "version", "status", "dashboard", "docs"))
    assert body["status"] == "running" and body["dashboard"] == "http://localhost:5173"
    assert body["discovery"]["health"] == "/healthz"  # Headrace's keys stay


async def test_health_has_laddrs_labels_and_headraces_checks(keyed: Stack) -> None:
    status, _, body = await call(keyed, "GET", "/api/health")
    assert status == 200 and body["status"] == "ok" and body["version"], body
    components = body["components"]
    assert all(isinstance(components[k], str) for k in ("database", "storage", "message_bus")), components
    assert components["tracing"] == {"enabled": True, "backend": "database"}
    assert {name: c["status"] for name, c in body["checks"].items()} == {
        "database": "ok",
        "storage": "ok",
        "message_bus": "ok",
    }


async def test_health_degraded_is_still_200(keyed: Stack) -> None:
    assert keyed.api.pool is not None
    await keyed.api.pool.close()  # the read-model database is gone for this API process
    status, _, body = await call(keyed, "GET", "/api/health")
    assert status == 200 and body["status"] == "degraded", body
    assert body["checks"]["database"]["status"] == "error" and body["checks"]["message_bus"]["status"] == "ok"


@pytest.mark.parametrize("path", ["/api/logs/containers", "/api/logs/containers/api"])
async def test_container_logs_are_503_with_a_reason(keyed: Stack, path: str) -> None:
    status, _, body = await call(keyed, "GET", path, headers=API_KEY_RIGHT)
    assert status == 503 and "Docker" in body["detail"], body
    assert_unauthorized(*await call(keyed, "GET", path))


async def test_container_logs_check_their_query_as_laddr(keyed: Stack) -> None:
    status, _, body = await call(keyed, "GET", "/api/logs/containers/api?tail=abc", headers=API_KEY_RIGHT)
    assert_validation(status, body, type_="int_parsing", loc=["query", "tail"], input_="abc")

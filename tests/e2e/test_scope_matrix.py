"""Every registered route x every scope (and no token, and a wrong one), asserted against the scope
table in services/core/scopes.py: 401 without a valid token, 403 without the scope, anything but
401/403 (and never a 500) with it. The routes come from the running app's router, so a route added
without an entry in the table fails here (and the app refuses to start). Then the same matrix for
the indirect doors: a Laddr job naming a pipeline, a replay and a retry need both their route's
scope and the scope of the work they run."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from services.api import guard
from services.core import scopes
from tests.support import laddr
from tests.support.stack import TOKENS, Stack

#: one token per scope (the stack's test tokens), no token, and a token nobody configured
SCOPE_TOKENS: dict[str, str | None] = {
    "*": TOKENS["admin"][0],
    "plugin:ro": TOKENS["plugin_ro"][0],
    "plugin:rw": TOKENS["plugin_rw"][0],
    "jobs:ro": TOKENS["jobs_ro"][0],
    "jobs:rw": TOKENS["jobs_rw"][0],
    "events:ro": TOKENS["events_ro"][0],
    "events:rw": TOKENS["events_rw"][0],
    "no token": None,
    "wrong token": "not-a-configured-token",
}
#: values for path parameters: real names where a real one makes the request go further
PARAMS = {
    "plugin": "echo",
    "name": "echo",
    "job_id": "no-such-job",
    "agent_name": "no-such-agent",
    "prompt_id": "no-such-prompt",
    "trace_id": "no-such-trace",
    "task_id": "no-such-task",
    "container_name": "no-such-container",
    "batch_id": "no-such-batch",
    "file": "swagger-ui.css",
}
#: the direct command route needs the command's scope: one read and one write command
COMMANDS = {"health": "read", "poll": "write"}
SECRET = "matrix-webhook-secret"
#: what the README's endpoint table says, pinned so the table itself cannot drift silently
DOCUMENTED = {
    ("GET", "/plugin/{name}"): ("plugin:ro",),
    ("POST", "/pipeline/{name}"): ("plugin:rw",),
    ("GET", "/job/{job_id}"): ("jobs:ro",),
    ("POST", "/job/{job_id}/retry"): ("jobs:rw",),
    ("GET", "/events"): ("events:ro",),
    ("POST", "/system/reload"): ("*",),
    ("GET", "/config/view"): ("*",),
    ("GET", "/api/agents/{agent_name}/chat"): ("jobs:ro",),
    ("POST", "/api/jobs"): ("jobs:rw",),
    ("POST", "/api/jobs/{job_id}/replay"): ("jobs:rw",),
    ("GET", "/openapi.json"): (),
    ("GET", "/api/health"): (),
}


def _expected(needed: tuple[str, ...], scope: str) -> str:
    if not needed:
        return "allowed"
    if scope in ("no token", "wrong token"):
        return "401"
    return "allowed" if scopes.grants_any({scope}, needed) else "403"


def _outcome(status: int) -> str:
    return str(status) if status in (401, 403) else "allowed"


def _fill(template: str, **override: str) -> str:
    values = {**PARAMS, **override}
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], template)


def cases(stack: Stack) -> Iterator[tuple[str, str, tuple[str, ...], scopes.Rule]]:
    """(method, concrete path, scopes any of which admits it, rule) for every registered route."""
    assert stack.api.app is not None
    for route in stack.api.app.router.routes():
        if route.method == "*":
            continue
        rule = guard.rule_of(route)
        template = route.resource.canonical if route.resource else "?"
        assert rule is not None, f"{route.method} {template} has no entry in services/core/scopes.py ROUTES"
        if rule.webhook:
            continue
        if (route.method, template) == ("POST", "/plugin/{plugin}/{command}"):
            for command, kind in COMMANDS.items():
                yield route.method, _fill(template, command=command), (scopes.command_scope(kind),), rule
            continue
        yield route.method, _fill(template), rule.any_of, rule


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def _status(
    session: aiohttp.ClientSession,
    stack: Stack,
    method: str,
    path: str,
    token: str | None,
    *,
    in_query: bool = False,
    body: bytes = b"{}",
    headers: dict[str, str] | None = None,
) -> int:
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    if token is not None and not in_query:
        hdrs["Authorization"] = f"Bearer {token}"
    if token is not None and in_query:
        path += ("&" if "?" in path else "?") + f"token={token}"
    data = body if method == "POST" else None
    # the response body is not read: GET /events answers with a stream that never ends
    async with session.request(method, stack.url + path, data=data, headers=hdrs, allow_redirects=False) as resp:
        return resp.status


async def _designed_unavailable(
    session: aiohttp.ClientSession, stack: Stack, path: str, token: str | None, status: int
) -> bool:
    """A 5xx that is Laddr's container-log 503 by design (read again with GET: HEAD has no body)."""
    hdrs = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with session.get(stack.url + path, headers=hdrs) as resp:
        return laddr.designed_unavailable(path, status, await resp.read())


@pytest.fixture
async def matrix_stack(make_config: Any, start_stack: Any) -> Stack:
    return await start_stack(
        make_config(
            plugins={"echo": {}, "echo_py": {}, "exit78": {"retry": {"max_attempts": 1}}},
            pipelines=[{"name": "shout", "steps": [{"id": "one", "uses": "echo.poll"}]}],
            secrets={"matrix": SECRET},
            webhooks=[{"name": "matrix", "path": "/webhook/matrix", "plugin": "echo", "secret_ref": "matrix"}],
        )
    )


async def test_every_route_answers_every_scope_exactly_as_the_table_says(
    matrix_stack: Stack, session: aiohttp.ClientSession
) -> None:
    for (method, path), any_of in DOCUMENTED.items():
        assert scopes.route_rule(method, path) is not None and scopes.route_rule(method, path).any_of == any_of
    mismatches, server_errors, checked = [], [], 0
    for method, path, needed, rule in cases(matrix_stack):
        for scope, token in SCOPE_TOKENS.items():
            status = await _status(session, matrix_stack, method, path, token)
            checked += 1
            if status >= 500 and not await _designed_unavailable(session, matrix_stack, path, token, status):
                server_errors.append((method, path, scope, status))
            if _outcome(status) != _expected(needed, scope):
                mismatches.append((method, path, scope, status, _expected(needed, scope)))
            # ?token= stands in for the header only where the table says so
            if token is not None and not rule.open:
                status = await _status(session, matrix_stack, method, path, token, in_query=True)
                want = _expected(needed, scope) if rule.query_token else "401"
                if _outcome(status) != want:
                    mismatches.append((method, path, f"{scope} in ?token=", status, want))
    assert not server_errors, server_errors
    assert not mismatches, "\n".join(map(str, mismatches))
    assert checked > 500  # every route was exercised, HEAD included

    # the webhook: the signature is the authentication, whatever bearer token comes along
    body = b'{"hello": "matrix"}'
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    for scope, token in SCOPE_TOKENS.items():
        assert await _status(session, matrix_stack, "POST", "/webhook/matrix", token, body=body) == 403, scope
    assert (
        await _status(
            session,
            matrix_stack,
            "POST",
            "/webhook/matrix",
            None,
            body=body,
            headers={"X-Hub-Signature-256": signature},
        )
        == 202
    )


async def test_indirect_doors_need_the_scope_of_the_work_they_run(
    matrix_stack: Stack, session: aiohttp.ClientSession
) -> None:
    client = matrix_stack.client
    assert client is not None
    poll = await client.submit("echo", "poll", {"message": "m"})
    health = await client.submit("echo", "health")
    dead = await client.submit("exit78", "poll")
    for job in (poll, health):
        await client.wait_job(job)
    assert (await client.wait_job(dead))["status"] == "dead"
    await laddr.projected(matrix_stack)
    doors = [  # (method, path, body, scopes all of which it needs)
        ("POST", "/api/jobs", b'{"pipeline_name": "shout", "inputs": {}}', ("jobs:rw", "plugin:rw")),
        ("POST", f"/api/jobs/{poll}/replay", b'{"reexecute": true}', ("jobs:rw", "plugin:rw")),
        ("POST", f"/api/jobs/{health}/replay", b'{"request": true}', ("jobs:rw", "plugin:ro")),
        ("POST", f"/api/jobs/{poll}/replay", b"{}", ("jobs:rw",)),  # the recorded result: runs nothing
        ("POST", f"/job/{dead}/retry", b"{}", ("jobs:rw", "plugin:rw")),
    ]
    tokens = {**SCOPE_TOKENS, "jobs:rw+plugin:rw": TOKENS["laddr_rw"][0]}
    mismatches = []
    for method, path, body, all_of in doors:
        for scope, token in tokens.items():
            held = set(scope.split("+"))
            if token is None or scope == "wrong token":
                want = "401"
            else:
                want = "allowed" if all(scopes.grants(held, s) for s in all_of) else "403"
            status = await _status(session, matrix_stack, method, path, token, body=body)
            if _outcome(status) != want or status >= 500:
                mismatches.append((method, path, body, scope, status, want))
    assert not mismatches, "\n".join(map(str, mismatches))


def test_a_route_without_a_table_entry_stops_the_app_from_starting() -> None:
    from aiohttp import web

    app = web.Application()

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({})

    app.router.add_get("/healthz", handler)
    guard.check_table(app)
    app.router.add_post("/brand/new", handler)
    with pytest.raises(RuntimeError, match="POST /brand/new"):
        guard.check_table(app)

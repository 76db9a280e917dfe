"""Ductile's webhook listener (shared/spec/ductile-conformance.md §2.22, §5.7): the map form
`webhooks: {listen, endpoints}` opens a second listener on `listen` that serves only the webhook
paths, `max_body_size` bounds each endpoint, and a body that is an event envelope is taken as
the event (Ductile's dispatcher does the same). Senders configured for Ductile's port keep working."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import aiohttp
import orjson
import pytest

from services.core import subjects
from services.core import webhooks as hooks_mod
from tests.support import infra
from tests.support.stack import Client, Stack

SECRET = "ductile-webhook-secret-0"


def signed(body: bytes) -> dict[str, str]:
    return {"X-Signature": "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()}


@pytest.fixture
async def hooked(make_config: Any, start_stack: Any, monkeypatch: pytest.MonkeyPatch) -> Stack:
    monkeypatch.setenv("HR_TEST_DUCTILE_HOOK", SECRET)
    config = make_config(
        webhooks={
            "listen": "127.0.0.1:0",
            "endpoints": [
                {
                    "name": "ci",
                    "path": "/hooks/ci",
                    "plugin": "echo",
                    "secret_ref": "HR_TEST_DUCTILE_HOOK",
                    "signature_header": "X-Signature",
                    "max_body_size": "1KB",
                },
                {
                    "name": "big",
                    "path": "/hooks/big",
                    "plugin": "echo",
                    "secret_ref": "HR_TEST_DUCTILE_HOOK",
                    "signature_header": "X-Signature",
                    "max_body_size": 4096,
                },
            ],
        }
    )
    assert config.webhooks_listen == ("127.0.0.1", 0)
    return await start_stack(config)


def listener(hr: Stack) -> Client:
    assert hr.api.webhook_port is not None
    return Client(f"http://127.0.0.1:{hr.api.webhook_port}")


async def test_the_listen_address_serves_the_webhook_paths_only(hooked: Stack) -> None:
    hooks = listener(hooked)
    try:
        body = orjson.dumps({"ref": "main"})
        status, out = await hooks.post("/hooks/ci", data=body, token=None, headers=signed(body))
        assert status == 202 and set(out) >= {"job_id"}, out
        done = await hooked.client.wait_job(out["job_id"])  # type: ignore[union-attr]
        assert done["status"] == "succeeded" and done["plugin"] == "echo" and done["command"] == "handle"
        assert done["submitted_by"] == "webhook:/hooks/ci"

        for headers in ({}, {"X-Signature": "sha256=" + "0" * 64}):
            status, out = await hooks.post("/hooks/ci", data=body, token=None, headers=headers)
            assert status == 403 and isinstance(out["error"], str), out
        # nothing else is served there: no /healthz, no API routes (JSON 404, as every error)
        for path in ("/healthz", "/jobs", "/"):
            status, out = await hooks.get(path, token=None)
            assert status == 404 and isinstance(out["error"], str), (path, out)
    finally:
        await hooks.close()
    # the paths stay on api.listen too
    assert hooked.client is not None
    status, _ = await hooked.client.post("/hooks/ci", data=body, token=None, headers=signed(b"{}"))
    assert status == 403


async def test_max_body_size_is_per_endpoint(hooked: Stack) -> None:
    hooks = listener(hooked)
    try:
        two_kb = b'{"x":"' + b"a" * 2040 + b'"}'
        status, out = await hooks.post("/hooks/ci", data=two_kb, token=None, headers=signed(two_kb))
        assert status == 413 and isinstance(out["error"], str), out  # 1KB = 1024 bytes
        status, out = await hooks.post("/hooks/big", data=two_kb, token=None, headers=signed(two_kb))
        assert status == 202, out
    finally:
        await hooks.close()


async def test_an_envelope_body_is_the_event(hooked: Stack) -> None:
    hooks = listener(hooked)
    try:
        body = orjson.dumps({"type": "deploy.requested", "payload": {"env": "prod"}})
        status, out = await hooks.post("/hooks/ci", data=body, token=None, headers=signed(body))
        assert status == 202, out
        plain = orjson.dumps({"action": "opened"})
        status, other = await hooks.post("/hooks/ci", data=plain, token=None, headers=signed(plain))
        assert status == 202, other
    finally:
        await hooks.close()
    bus = hooked.api.bus
    assert bus is not None

    def queued_event(job_id: str) -> Any:
        async def found() -> Any:  # the 202 comes before the dispatcher's decision: wait for it
            got = await bus.last_message(subjects.EVENTS, subjects.job_event(job_id, "queued"))
            return got[1].data["event"] if got is not None else None

        return infra.wait_until(found, what=f"job {job_id} queued")

    assert await queued_event(out["job_id"]) == {"type": "deploy.requested", "payload": {"env": "prod"}}
    assert await queued_event(other["job_id"]) == {"type": "webhook.ci", "payload": {"action": "opened"}}


def test_listen_and_max_body_size_load_without_warnings(make_config: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HR_TEST_DUCTILE_HOOK", SECRET)
    config = make_config(
        webhooks={
            "listen": "127.0.0.1:8091",
            "endpoints": [
                {
                    "name": "ci",
                    "path": "/hooks/ci",
                    "plugin": "echo",
                    "secret_ref": "HR_TEST_DUCTILE_HOOK",
                    "signature_header": "X-Signature",
                    "max_body_size": "2MB",
                }
            ],
        }
    )
    assert config.webhooks_listen == ("127.0.0.1", 8091)
    assert not [w for w in config.warnings if w.startswith("webhooks")], config.warnings
    (hook,) = hooks_mod.parse_all(config.webhooks)
    assert hook.max_body_bytes == 2 * 1024 * 1024


async def test_without_endpoints_no_listener_is_opened(make_config: Any, start_stack: Any) -> None:
    hr: Stack = await start_stack(make_config(webhooks={"listen": "127.0.0.1:0", "endpoints": []}))
    assert hr.config.webhooks_listen is None and hr.api.webhook_port is None
    async with aiohttp.ClientSession() as session, session.get(hr.url + "/healthz") as resp:
        assert resp.status == 200

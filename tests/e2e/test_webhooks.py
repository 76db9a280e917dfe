"""Webhooks: `POST <path>` signed with HMAC-SHA256 (GitHub's `sha256=<hex>` or bare hex) → 202 and a
job; a bad or missing signature → 403; over 1 MiB → 413; an unknown path → 404 JSON. The secret
comes from the environment or a `secrets:` entry, never from the webhook's YAML."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import orjson
import pytest

from services.core import errors, subjects
from tests.support.stack import Stack

GH_SECRET = "gh-webhook-secret-from-env"
PLAIN_SECRET = "plain-secret-from-secrets-section"


def hooks_config(make_config: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("HR_TEST_GH_SECRET", GH_SECRET)
    monkeypatch.setenv("HR_TEST_PLAIN", PLAIN_SECRET)
    return make_config(
        secrets={"plain_secret": "${HR_TEST_PLAIN}"},
        webhooks=[
            {"name": "github", "path": "/webhook/github", "plugin": "echo_py", "secret_ref": "HR_TEST_GH_SECRET",
             "signature_header": "X-Hub-Signature-256", "event_header": "X-GitHub-Event"},
            {"name": "plain", "path": "/hooks/plain", "plugin": "echo", "secret_ref": "plain_secret",
             "signature_header": "X-Signature"},
        ],
    )


def hexdigest(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def queued_event(s: Stack, job_id: str) -> dict[str, Any]:
    assert s.api.bus is not None
    last = await s.api.bus.last_message(subjects.EVENTS, subjects.job_event(job_id, "queued"))
    assert last is not None
    return last[1].data


async def test_signed_webhooks_submit_jobs(make_config: Any, start_stack: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    config = hooks_config(make_config, monkeypatch)
    assert config.webhook_secrets == {"github": GH_SECRET, "plain": PLAIN_SECRET}
    s = await start_stack(config)
    body = orjson.dumps({"ref": "refs/heads/main", "commits": 3})
    status, out = await s.client.post("/webhook/github", data=body, token=None, headers={
        "X-Hub-Signature-256": "sha256=" + hexdigest(GH_SECRET, body), "X-GitHub-Event": "push",
        "Content-Type": "application/json"})
    assert status == 202, out
    done = await s.client.wait_job(out["job_id"])
    assert done["status"] == "succeeded" and done["plugin"] == "echo_py" and done["command"] == "handle"
    assert done["submitted_by"] == "webhook"
    assert done["result"]["result"]["echo"] == {"ref": "refs/heads/main", "commits": 3}
    queued = await queued_event(s, out["job_id"])
    assert queued["event"] == {"type": "webhook.github.push", "payload": {"ref": "refs/heads/main", "commits": 3}}

    # bare hex, a body that is not JSON, the secret from the secrets: section, a plugin's own command
    text = b"plain text, not json"
    status, out = await s.client.post("/hooks/plain", data=text, token=None,
                                      headers={"X-Signature": hexdigest(PLAIN_SECRET, text)})
    assert status == 202, out
    done = await s.client.wait_job(out["job_id"])
    assert done["status"] == "succeeded" and done["plugin"] == "echo"
    queued = await queued_event(s, out["job_id"])
    assert queued["payload"] == {"raw": "plain text, not json"} and queued["event"]["type"] == "webhook.plain"


async def test_bad_signatures_oversized_bodies_and_unknown_paths(make_config: Any, start_stack: Any,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    s = await start_stack(hooks_config(make_config, monkeypatch))
    body = b'{"a": 1}'
    bad = [
        {},  # missing
        {"X-Hub-Signature-256": "sha256=" + hexdigest("wrong secret", body)},
        {"X-Hub-Signature-256": "sha256=" + hexdigest(GH_SECRET, b'{"a": 2}')},  # another body's
        {"X-Hub-Signature-256": "sha256=zz"},
        {"X-Signature": "sha256=" + hexdigest(GH_SECRET, body)},  # the wrong header
    ]
    for headers in bad:
        status, out = await s.client.post("/webhook/github", data=body, token=None, headers=headers)
        assert status == 403, (headers, out)
        assert out["code"] == "forbidden"

    big = b"{" + b" " * (1024 * 1024) + b"}"
    status, out = await s.client.post("/webhook/github", data=big, token=None,
                                      headers={"X-Hub-Signature-256": "sha256=" + hexdigest(GH_SECRET, big)})
    assert status == 413 and out["code"] == "payload_too_large"

    async def chunks() -> Any:  # no Content-Length: the limit holds while reading
        for _ in range(20):
            yield b"x" * (64 * 1024)

    status, out = await s.client.post("/webhook/github", data=chunks(), token=None,  # type: ignore[arg-type]
                                      headers={"X-Hub-Signature-256": "sha256=00"})
    assert status == 413

    exactly = b"x" * (1024 * 1024)
    status, out = await s.client.post("/webhook/github", data=exactly, token=None,
                                      headers={"X-Hub-Signature-256": hexdigest(GH_SECRET, exactly)})
    assert status == 202, out

    status, out = await s.client.post("/webhook/nope", data=body, token=None)
    assert status == 404 and out["code"] == "not_found"
    status, out = await s.client.get("/webhook/github", token=None)
    assert status == 405


async def test_a_webhook_secret_must_resolve(make_config: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HR_TEST_NO_SUCH_SECRET", raising=False)
    hook = {"name": "gh", "path": "/webhook/gh", "plugin": "echo_py", "secret_ref": "HR_TEST_NO_SUCH_SECRET"}
    with pytest.raises(errors.ConfigError) as caught:
        make_config(webhooks=[hook])
    assert "webhooks[0] (gh)" in caught.value.message and "HR_TEST_NO_SUCH_SECRET" in caught.value.message

    without = {k: v for k, v in hook.items() if k != "secret_ref"}
    with pytest.raises(errors.ConfigError) as caught:
        make_config(webhooks=[without])
    assert "webhooks[0]: missing required key 'secret_ref'" in caught.value.message

    monkeypatch.setenv("HR_TEST_NO_SUCH_SECRET", "now it is set")
    with pytest.raises(errors.ConfigError) as caught:
        make_config(webhooks=[{**hook, "plugin": "no_such_plugin"}])
    assert "webhooks[0] (gh)" in caught.value.message and "no_such_plugin" in caught.value.message
    assert make_config(webhooks=[hook]).webhook_secrets == {"gh": "now it is set"}

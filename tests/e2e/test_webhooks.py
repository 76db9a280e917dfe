"""Webhooks: `POST <path>` signed with HMAC-SHA256 (GitHub's `sha256=<hex>` or bare hex) → 202 and a
job; a bad or missing signature → 403; over 1 MiB → 413; an unknown path → 404 JSON. The secret
comes from the environment or a `secrets:` entry, never from the webhook's YAML."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
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
            {
                "name": "github",
                "path": "/webhook/github",
                "plugin": "echo_py",
                "secret_ref": "HR_TEST_GH_SECRET",
                "signature_header": "X-Hub-Signature-256",
                "event_header": "X-GitHub-Event",
            },
            {
                "name": "plain",
                "path": "/hooks/plain",
                "plugin": "echo",
                "secret_ref": "plain_secret",
                "signature_header": "X-Signature",
            },
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
    status, out = await s.client.post(
        "/webhook/github",
        data=body,
        token=None,
        headers={
            "X-Hub-Signature-256": "sha256=" + hexdigest(GH_SECRET, body),
            "X-GitHub-Event": "push",
            "Content-Type": "application/json",
        },
    )
    assert status == 202, out
    done = await s.client.wait_job(out["job_id"])
    assert done["status"] == "succeeded" and done["plugin"] == "echo_py" and done["command"] == "handle"
    assert done["submitted_by"] == "webhook:/webhook/github"  # Ductile's webhook:<path>
    assert done["result"]["result"]["echo"] == {"ref": "refs/heads/main", "commits": 3}
    queued = await queued_event(s, out["job_id"])
    assert queued["event"] == {"type": "webhook.github.push", "payload": {"ref": "refs/heads/main", "commits": 3}}

    # bare hex, a body that is not JSON, the secret from the secrets: section, a plugin's own command
    text = b"plain text, not json"
    status, out = await s.client.post(
        "/hooks/plain", data=text, token=None, headers={"X-Signature": hexdigest(PLAIN_SECRET, text)}
    )
    assert status == 202, out
    done = await s.client.wait_job(out["job_id"])
    assert done["status"] == "succeeded" and done["plugin"] == "echo"
    queued = await queued_event(s, out["job_id"])
    assert queued["payload"] == {"raw": "plain text, not json"} and queued["event"]["type"] == "webhook.plain"


async def test_bad_signatures_oversized_bodies_and_unknown_paths(
    make_config: Any, start_stack: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
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
    status, out = await s.client.post(
        "/webhook/github", data=big, token=None, headers={"X-Hub-Signature-256": "sha256=" + hexdigest(GH_SECRET, big)}
    )
    assert status == 413 and out["code"] == "payload_too_large"

    async def chunks() -> Any:  # no Content-Length: the limit holds while reading
        for _ in range(20):
            yield b"x" * (64 * 1024)

    status, out = await s.client.post(
        "/webhook/github",
        data=chunks(),
        token=None,  # type: ignore[arg-type]
        headers={"X-Hub-Signature-256": "sha256=00"},
    )
    assert status == 413

    exactly = b"x" * (1024 * 1024)
    status, out = await s.client.post(
        "/webhook/github", data=exactly, token=None, headers={"X-Hub-Signature-256": hexdigest(GH_SECRET, exactly)}
    )
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


def replay_config(make_config: Any, monkeypatch: pytest.MonkeyPatch, **github: Any) -> Any:
    monkeypatch.setenv("HR_TEST_GH_SECRET", GH_SECRET)
    return make_config(
        webhooks=[
            {
                "name": "github",
                "path": "/webhook/github",
                "plugin": "echo_py",
                "secret_ref": "HR_TEST_GH_SECRET",
                "event_header": "X-GitHub-Event",
                **github,
            },
            {
                "name": "stripe",
                "path": "/hooks/stripe",
                "plugin": "echo_py",
                "secret_ref": "HR_TEST_GH_SECRET",
                "scheme": "stripe",
                "tolerance": "2m",
            },
            {
                "name": "slack",
                "path": "/hooks/slack",
                "plugin": "echo_py",
                "secret_ref": "HR_TEST_GH_SECRET",
                "scheme": "slack",
            },
            {
                "name": "stamped",
                "path": "/hooks/stamped",
                "plugin": "echo_py",
                "secret_ref": "HR_TEST_GH_SECRET",
                "timestamp_header": "X-Timestamp",
                "signature_header": "X-Signature",
            },
            {
                "name": "open",
                "path": "/hooks/open",
                "plugin": "echo_py",
                "secret_ref": "HR_TEST_GH_SECRET",
                "dedupe_window": 0,
            },
        ]
    )


async def submitted_jobs(s: Stack) -> set[str]:
    """The job id of every submit command stored so far (one per job the API created)."""
    assert s.api.bus is not None
    info = await s.api.bus.js.stream_info(subjects.COMMANDS, subjects_filter="cmd.job.*.submit")
    return {subject.split(".")[2] for subject in (info.state.subjects or {})}


async def test_a_replayed_webhook_creates_no_second_job(
    make_config: Any, start_stack: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = await start_stack(replay_config(make_config, monkeypatch))
    body = orjson.dumps({"action": "opened", "number": 7})
    headers = {
        "X-Hub-Signature-256": "sha256=" + hexdigest(GH_SECRET, body),
        "X-GitHub-Event": "pull_request",
        "X-GitHub-Delivery": "d-1",
    }
    answers = [await s.client.post("/webhook/github", data=body, token=None, headers=headers) for _ in range(3)]
    assert [status for status, _ in answers] == [202, 202, 202], answers
    first = answers[0][1]
    assert first["duplicate"] is False
    assert all(out["job_id"] == first["job_id"] and out["duplicate"] is True for _, out in answers[1:])
    # a replayer changing the (unsigned) delivery id is caught by the body digest
    status, out = await s.client.post(
        "/webhook/github", data=body, token=None, headers={**headers, "X-GitHub-Delivery": "d-2"}
    )
    assert status == 202 and out["duplicate"] is True and out["job_id"] == first["job_id"]
    # the sender's redelivery of d-1 with another body (e.g. re-rendered) is the same delivery
    other = orjson.dumps({"action": "opened", "number": 7, "redelivered": True})
    status, out = await s.client.post(
        "/webhook/github",
        data=other,
        token=None,
        headers={**headers, "X-Hub-Signature-256": "sha256=" + hexdigest(GH_SECRET, other)},
    )
    assert status == 202 and out["duplicate"] is True and out["job_id"] == first["job_id"]
    assert await submitted_jobs(s) == {first["job_id"]}
    assert (await s.client.wait_job(first["job_id"]))["status"] == "succeeded"

    # two identical requests at once → one job
    racing = orjson.dumps({"action": "closed", "number": 8})
    sig = {"X-Hub-Signature-256": "sha256=" + hexdigest(GH_SECRET, racing)}
    answers = await asyncio.gather(
        *(s.client.post("/webhook/github", data=racing, token=None, headers=sig) for _ in range(8))
    )
    assert {status for status, _ in answers} == {202}, answers
    assert len({out["job_id"] for _, out in answers}) == 1
    assert sum(not out["duplicate"] for _, out in answers) == 1
    assert len(await submitted_jobs(s)) == 2

    # dedupe_window: 0 turns it off for a sender that legitimately repeats bodies
    ping = b'{"ping": true}'
    sig = {"X-Hub-Signature-256": "sha256=" + hexdigest(GH_SECRET, ping)}
    ids = {(await s.client.post("/hooks/open", data=ping, token=None, headers=sig))[1]["job_id"] for _ in range(2)}
    assert len(ids) == 2


async def test_timestamped_signatures_refuse_stale_requests(
    make_config: Any, start_stack: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = await start_stack(replay_config(make_config, monkeypatch))
    body = b'{"id": "evt_1", "type": "charge.succeeded"}'

    def stripe(ts: int, payload: bytes = body) -> dict[str, str]:
        sig = hexdigest(GH_SECRET, f"{ts}.".encode() + payload)
        return {"Stripe-Signature": f"t={ts},v1={'0' * 64},v1={sig}"}

    now = int(time.time())
    status, first = await s.client.post("/hooks/stripe", data=body, token=None, headers=stripe(now))
    assert status == 202 and first["duplicate"] is False, first
    status, out = await s.client.post("/hooks/stripe", data=body, token=None, headers=stripe(now))
    assert status == 202 and out == {**first, "duplicate": True}
    for stale in (now - 600, now + 600):
        status, out = await s.client.post("/hooks/stripe", data=body, token=None, headers=stripe(stale))
        assert status == 403 and out["code"] == "forbidden" and "tolerance" in out["error"], out
    status, out = await s.client.post(
        "/hooks/stripe", data=body, token=None, headers={"Stripe-Signature": f"t={now},v1={hexdigest(GH_SECRET, body)}"}
    )
    assert status == 403  # the timestamp is part of what is signed
    status, again = await s.client.post("/hooks/stripe", data=body, token=None, headers=stripe(now + 1))
    assert status == 202 and again["duplicate"] is False  # the sender's own resend, signed anew

    def slack(ts: int | str) -> dict[str, str]:
        sig = hexdigest(GH_SECRET, f"v0:{ts}:".encode() + body)
        return {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": f"v0={sig}"}

    status, out = await s.client.post("/hooks/slack", data=body, token=None, headers=slack(now))
    assert status == 202 and out["duplicate"] is False, out
    status, out = await s.client.post("/hooks/slack", data=body, token=None, headers=slack(now - 301))
    assert status == 403 and "tolerance" in out["error"]
    status, out = await s.client.post(
        "/hooks/slack", data=body, token=None, headers={"X-Slack-Signature": slack(now)["X-Slack-Signature"]}
    )
    assert status == 403 and "X-Slack-Request-Timestamp" in out["error"]
    status, out = await s.client.post("/hooks/slack", data=body, token=None, headers=slack("yesterday"))
    assert status == 403

    def stamped(ts: int) -> dict[str, str]:
        return {"X-Timestamp": str(ts), "X-Signature": "sha256=" + hexdigest(GH_SECRET, f"{ts}.".encode() + body)}

    status, out = await s.client.post("/hooks/stamped", data=body, token=None, headers=stamped(now))
    assert status == 202 and out["duplicate"] is False
    status, out = await s.client.post("/hooks/stamped", data=body, token=None, headers=stamped(now - 3600))
    assert status == 403 and "tolerance" in out["error"]
    status, out = await s.client.post(
        "/hooks/stamped", data=body, token=None, headers={"X-Signature": "sha256=" + hexdigest(GH_SECRET, body)}
    )
    assert status == 403 and "X-Timestamp" in out["error"]

"""Relay ingress (shared/spec/ductile-conformance.md §2.21, Ductile's `relay.Receiver` and its
`sign`): a Ductile peer POSTs a signed envelope to `<listen_path>/<peer>`; each check refuses in
Ductile's order and words; an accepted event starts the pipelines whose `on` is its type, once
per dedupe key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from services.core import relay as relay_mod
from tests.support.infra import wait_until
from tests.support.stack import Stack

SECRET = "shared-relay-secret"
PATH = "/ingest/peer/home-primary"


@pytest.fixture
async def relayed(make_config: Any, start_stack: Any, monkeypatch: pytest.MonkeyPatch) -> Stack:
    monkeypatch.setenv("HR_TEST_RELAY_SECRET", SECRET)
    ingress = {
        "listen_path": "/ingest/peer",
        "allowed_clock_skew": "1m",
        "require_key_id": True,
        "max_body_size": "2KB",
        "peers": [
            {
                "name": "home-primary",
                "enabled": True,
                "secret_ref": "HR_TEST_RELAY_SECRET",
                "key_id": "v1",
                "accept": ["backup.ready"],
                "baggage": {"allow": ["trace_id"]},
            },
            {"name": "off", "enabled": False, "secret_ref": "HR_TEST_RELAY_SECRET"},
        ],
    }
    pipelines = [{"name": "offsite", "on": "backup.ready", "steps": [{"id": "verify", "uses": "echo_py"}]}]
    return await start_stack(
        make_config(remote_ingress=ingress, pipelines=pipelines, plugins={"echo": {}, "echo_py": {}})
    )


def headers(
    body: bytes,
    *,
    peer: str = "home-primary",
    path: str = PATH,
    key_id: str | None = "v1",
    stamp: str | None = None,
    secret: str = SECRET,
) -> dict[str, str]:
    stamp = stamp or datetime.now(UTC).isoformat().replace("+00:00", "Z")
    out = {
        "Content-Type": "application/json",
        relay_mod.HEADER_PEER: peer,
        relay_mod.HEADER_TIMESTAMP: stamp,
        relay_mod.HEADER_SIGNATURE: "sha256=" + relay_mod.sign("POST", path, stamp, body, secret),
    }
    if key_id is not None:
        out[relay_mod.HEADER_KEY_ID] = key_id
    return out


def envelope(**event: Any) -> bytes:
    return orjson.dumps(
        {
            "event": {"type": "backup.ready", "payload": {"path": "/srv/latest.tar"}, **event},
            "origin": {"instance": "home-primary", "job_id": "job-123", "event_id": "evt-456"},
        }
    )


def test_the_signature_is_ductiles() -> None:
    """HMAC-SHA256 of METHOD\\npath\\ntimestamp\\nbody, hex (Ductile's relay `sign`)."""
    import hashlib
    import hmac

    body = b'{"event":{}}'
    expected = hmac.new(b"k", b"POST\n/p/x\n2026-01-01T00:00:00Z\n" + body, hashlib.sha256).hexdigest()
    assert relay_mod.sign("post ", "/p/x", " 2026-01-01T00:00:00Z", body, "k") == expected
    assert relay_mod.verify("POST", "/p/x", "2026-01-01T00:00:00Z", body, "sha256=" + expected, "k")
    assert not relay_mod.verify("POST", "/p/y", "2026-01-01T00:00:00Z", body, expected, "k")


async def test_an_accepted_relay_starts_the_pipeline_once(relayed: Stack) -> None:
    client = relayed.client
    assert client is not None and relayed.api.bus is not None
    body = envelope()
    status, out = await client.post(PATH, data=body, token=None, headers=headers(body))
    assert status == 202, out
    assert out["status"] == "accepted" and out["peer"] == "home-primary" and out["event_type"] == "backup.ready"
    assert out["receiver_event_id"]
    # the same envelope again (a replay inside the skew): no second run
    status, again = await client.post(PATH, data=body, token=None, headers=headers(body))
    assert status == 202, again

    async def roots() -> Any:
        history = await relayed.api.bus.history("EVENTS", "evt.ingest.accepted")  # type: ignore[union-attr]
        found = [env for _, env in history if env.data.get("type") == "backup.ready"]
        return found if found and found[0].data.get("pipeline_roots") else None

    accepted = await wait_until(roots, timeout_s=15, what="the relayed event to start its pipeline")
    assert len(accepted) == 1 and accepted[0].data["dedupe_key"] == "relay:home-primary:home-primary:evt-456"
    (root,) = accepted[0].data["pipeline_roots"]
    done = await client.wait_job(root, {"succeeded", "dead"})
    assert done["status"] == "succeeded" and done["plugin"] == "pipeline" and done["command"] == "offsite"


async def test_each_check_refuses_in_ductiles_words(relayed: Stack) -> None:
    client = relayed.client
    assert client is not None
    body = envelope()
    old = (datetime.now(UTC) - timedelta(minutes=10)).isoformat().replace("+00:00", "Z")
    cases: list[tuple[str, bytes, dict[str, str], int, str]] = [
        (
            "/ingest/peer/stranger",
            body,
            headers(body, peer="stranger", path="/ingest/peer/stranger"),
            403,
            "unknown relay peer",
        ),
        ("/ingest/peer/off", body, headers(body, peer="off", path="/ingest/peer/off"), 403, "unknown relay peer"),
        (PATH, body, headers(body, peer="someone-else"), 403, "peer identity mismatch"),
        (PATH, body, {**headers(body), relay_mod.HEADER_TIMESTAMP: ""}, 403, "missing relay timestamp"),
        (PATH, body, headers(body, stamp="yesterday"), 403, "invalid relay timestamp"),
        (PATH, body, headers(body, stamp=old), 403, "relay timestamp outside allowed clock skew"),
        (PATH, body, headers(body, key_id=None), 403, "missing relay key id"),
        (PATH, body, headers(body, key_id="v2"), 403, "relay key id mismatch"),
        (PATH, body, {**headers(body), relay_mod.HEADER_SIGNATURE: ""}, 403, "missing relay signature"),
        (PATH, body, headers(body, secret="wrong"), 403, "forbidden"),
        (PATH, b"x" * 3000, headers(b"x" * 3000), 413, "relay payload too large"),
        (PATH, b"[1]", headers(b"[1]"), 400, "invalid relay envelope"),
        (PATH, b'{"event":{}}', headers(b'{"event":{}}'), 400, "event.type is required"),
    ]
    other = orjson.dumps({"event": {"type": "backup.ready", "payload": {}}, "origin": {"instance": "elsewhere"}})
    cases.append((PATH, other, headers(other), 403, "origin instance mismatch"))
    report = envelope(type="report.generated")
    cases.append((PATH, report, headers(report), 422, "event type not allowed for peer"))
    for path, data, hdrs, status, message in cases:
        got, out = await client.post(path, data=data, token=None, headers=hdrs)
        assert got == status and message in out["error"], (message, got, out)

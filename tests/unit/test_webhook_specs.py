"""Webhook specs (services/core/webhooks.py): signatures, secret resolution, parsing."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from services.core import webhooks

BODY = b'{"action": "opened"}'
SECRET = "s3cret"
HEX = hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()


@pytest.mark.parametrize("presented", [f"sha256={HEX}", HEX, HEX.upper(), f"SHA256={HEX}", f"  sha256={HEX}  "])
def test_valid_signatures(presented: str) -> None:
    assert webhooks.signature_valid(SECRET, BODY, presented)


@pytest.mark.parametrize(
    "presented", [None, "", "sha256=", f"sha1={HEX}", HEX[:-1], "sha256=" + "0" * 64, "sha256=ünïcode"]
)
def test_invalid_signatures(presented: str | None) -> None:
    assert not webhooks.signature_valid(SECRET, BODY, presented)
    assert not webhooks.signature_valid("other", BODY, f"sha256={HEX}")
    assert webhooks.sign(SECRET, BODY) == f"sha256={HEX}"


def hook(**extra: str) -> dict[str, str]:
    return {"name": "gh", "path": "/webhook/gh", "plugin": "echo", "secret_ref": "GH", **extra}


def test_secrets_come_from_the_secrets_section_then_the_environment() -> None:
    parsed = webhooks.parse_all([hook(), hook(name="b", path="/b", secret_ref="B")])
    assert parsed[0].command == "handle" and parsed[0].signature_header == "X-Hub-Signature-256"
    resolved = webhooks.resolve_secrets(parsed, {"GH": "from-secrets"}, {"GH": "from-env", "B": "env-b"})
    assert resolved == {"gh": "from-secrets", "b": "env-b"}
    with pytest.raises(ValueError, match=r"webhooks\[1\] \(b\): secret_ref 'B' resolves to nothing"):
        webhooks.resolve_secrets(parsed, {}, {"GH": "x"})
    with pytest.raises(ValueError, match=r"webhooks\[0\] \(gh\): secret_ref is required"):
        webhooks.resolve_secrets(webhooks.parse_all([hook(secret_ref="")]), {}, {})


def test_duplicates_plugins_and_event_types() -> None:
    with pytest.raises(ValueError, match="duplicate webhook path"):
        webhooks.parse_all([hook(), hook(name="other")])
    with pytest.raises(ValueError, match="duplicate webhook name"):
        webhooks.parse_all([hook(), hook(path="/other")])
    (gh,) = webhooks.parse_all([hook(command="poll")])
    with pytest.raises(ValueError, match="has no command 'poll'"):
        webhooks.check_plugins([gh], {"echo": {"handle": 1}})
    with pytest.raises(ValueError, match="unknown plugin 'echo'"):
        webhooks.check_plugins([gh], {})
    assert gh.event_type("push") == "webhook.gh.push"
    assert gh.event_type(None) == "webhook.gh" and gh.event_type("bad value!") == "webhook.gh"


def test_timestamped_schemes_and_dedupe_keys() -> None:
    stripe, slack, plain = webhooks.parse_all(
        [hook(name="s", path="/s", scheme="stripe"), hook(name="k", path="/k", scheme="slack"), hook()]
    )
    assert stripe.signature_header == "Stripe-Signature" and stripe.timestamped
    assert slack.timestamp_header == "X-Slack-Request-Timestamp" and not plain.timestamped
    sig = hmac.new(SECRET.encode(), b"1000." + BODY, hashlib.sha256).hexdigest()
    assert webhooks.verify(stripe, SECRET, BODY, {"Stripe-Signature": f"t=1000,v1={sig}"}, now=1100) == 1000
    for headers, now, needle in [
        ({"Stripe-Signature": f"t=1000,v1={sig}"}, 1301, "tolerance"),
        ({"Stripe-Signature": f"v1={sig}"}, 1000, "timestamp"),
        ({"Stripe-Signature": f"t=1001,v1={sig}"}, 1000, "signature"),
        ({}, 1000, "Stripe-Signature"),
    ]:
        with pytest.raises(webhooks.Refused, match=needle):
            webhooks.verify(stripe, SECRET, BODY, headers, now=now)
    assert webhooks.verify(plain, SECRET, BODY, {"X-Hub-Signature-256": HEX}, now=0) is None
    keys = webhooks.dedupe_keys(plain, BODY, {"X-GitHub-Delivery": "abc"}, timestamp=None)
    assert keys[0].startswith("body:") and keys[1] == "delivery:abc"
    assert webhooks.dedupe_keys(plain, BODY, {}, timestamp=5) != webhooks.dedupe_keys(plain, BODY, {}, timestamp=6)
    assert (
        len(
            webhooks.dedupe_keys(
                webhooks.parse_all([hook(delivery_header=None)])[0], BODY, {"X-GitHub-Delivery": "abc"}, timestamp=None
            )
        )
        == 1
    )
    with pytest.raises(ValueError, match="timestamp_header does not apply"):
        webhooks.parse_all([hook(scheme="stripe", timestamp_header="X-T")])

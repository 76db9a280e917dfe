"""GET /analytics/queue, GET /analytics/summary and GET /config/view over HTTP (`*` scope),
runner heartbeats in the agents KV bucket, and config redaction."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from services.api import config_view
from services.core import subjects
from services.runner import heartbeat
from tests.support import fake_llm, laddr
from tests.support.fake_llm import FakeLLM
from tests.support.infra import wait_until
from tests.support.stack import TOKENS, Client, Stack


def tok(name: str) -> str:
    return TOKENS[name][0]


@pytest.mark.parametrize("path", ["/analytics/queue", "/analytics/summary", "/config/view"])
@pytest.mark.parametrize(
    ("token", "expected"),
    [("admin", 200), ("jobs_ro", 403), ("jobs_rw", 403), ("plugin_rw", 403), ("events_ro", 403), (None, 401)],
)
async def test_admin_only_scopes(client: Client, path: str, token: str | None, expected: int) -> None:
    status, body = await client.get(path, token=tok(token) if token else None)
    assert status == expected, body
    if expected == 403:
        assert body["code"] == "forbidden" and body["required_scopes"] == ["*"]


async def first_heartbeat(hr: Stack) -> dict[str, Any]:
    """The runner's presence record, once its first beat is in the agents bucket (the beat is a task the
    runner spawns at start, so the stack can answer HTTP before it has landed)."""
    assert hr.runner.bus is not None
    kv = await hr.runner.bus.kv(subjects.KV_AGENTS)

    async def mine() -> dict[str, Any] | None:
        try:
            keys = await kv.keys()
        except Exception:  # NoKeysError: nothing in the bucket yet
            return None
        for key in keys:
            if key.startswith(heartbeat.KEY_PREFIX):
                record = orjson.loads((await kv.get(key)).value)
                if record["source"] == hr.runner.source:
                    return record
        return None

    return await wait_until(mine, what="the runner's first heartbeat")


async def test_queue_metrics_at_rest(client: Client, hr: Stack) -> None:
    await first_heartbeat(hr)
    status, body = await client.get("/analytics/queue")
    assert status == 200, body
    assert body["queue_depth"] == 0 and body["in_flight"] == 0 and body["timestamp"].endswith("Z")
    assert body["plugins"]["echo"] == {"queued": 0, "in_flight": 0, "delayed": 0, "parallelism": 2}
    assert body["plugins"]["echo_py"]["parallelism"] == 4
    runners = body["runners"]
    assert runners["count"] == 1 and runners["capacity"] == hr.config.max_workers == 4
    assert runners["busy"] == 0 and runners["utilisation"] == 0.0
    (instance,) = runners["instances"]
    assert {"echo", "echo_py"} <= set(instance["plugins"])


async def test_queue_depth_in_flight_and_busy_runner(
    make_config: Callable[..., Any], start_stack: Callable[..., Any]
) -> None:
    hr = await start_stack(make_config(plugins={"sleeper": {"parallelism": 1}, "echo": {}}))
    client = hr.client
    presence = heartbeat.Presence(hr.runner, interval_s=1.0)  # a second, faster-beating record of this runner
    hr.runner.spawn("test-presence", presence.run())
    ids = [await client.submit("sleeper", "poll", {"seconds": 20}) for _ in range(3)]

    async def backlog() -> dict[str, Any] | None:
        status, body = await client.get("/analytics/queue")
        assert status == 200, body
        sleeper = body["plugins"]["sleeper"]
        busy = body["runners"]["busy"]
        return body if sleeper["in_flight"] == 1 and sleeper["queued"] == 2 and busy >= 1 else None

    body = await wait_until(backlog, timeout_s=15, what="one sleeper running and two queued")
    assert body["queue_depth"] == 2 and body["plugins"]["sleeper"]["parallelism"] == 1
    assert body["runners"]["count"] == 2 and body["runners"]["capacity"] == 8
    assert 0 < body["runners"]["utilisation"] <= 1
    for job_id in ids:  # leave no 20 s sleeper behind
        await client.post(f"/job/{job_id}/cancel")
    for job_id in ids:
        await client.wait_job(job_id)


async def test_an_agent_run_in_flight_is_in_flight_not_queued(
    make_config: Callable[..., Any], start_stack: Callable[..., Any], fake: FakeLLM
) -> None:
    """Agent runs (work.agent.<agent>) are leased by one consumer per agent, not by a `runner-agent` one."""
    hr = await start_stack(make_config(plugins=laddr.plugins(), agents={"slow": laddr.agent(fake, "m-slow")}))
    release = asyncio.Event()
    fake.script("m-slow", fake_llm.held(release, fake_llm.text("done")))
    status, body = await hr.client.get("/api/agents/slow/chat?message=x&wait=false")
    assert status == 200, body
    await hr.client.wait_job(body["task_id"], {"running"})
    try:
        status, queue = await hr.client.get("/analytics/queue")
        assert status == 200, queue
        assert queue["plugins"]["agent"]["in_flight"] == 1 and queue["plugins"]["agent"]["queued"] == 0, queue
        assert queue["queue_depth"] == 0 and queue["in_flight"] == 1
    finally:
        release.set()
    await hr.client.wait_job(body["task_id"])


async def test_heartbeat_record_and_goodbye(make_config: Callable[..., Any], start_stack: Callable[..., Any]) -> None:
    hr = await start_stack(make_config())
    assert hr.api.bus is not None
    kv = await hr.api.bus.kv(subjects.KV_AGENTS)

    async def records() -> list[dict[str, Any]]:
        try:
            keys = await kv.keys()
        except Exception:  # NoKeysError: an empty bucket
            return []
        out = []
        for key in keys:
            if key.startswith(heartbeat.KEY_PREFIX):
                out.append(orjson.loads((await kv.get(key)).value))
        return out

    (record,) = await wait_until(records, what="the runner's heartbeat")
    assert record["kind"] == "runner" and record["capacity"] == 4 and record["busy"] == 0
    assert {"echo", "echo_py"} <= set(record["plugins"]) and record["last_seen"].endswith("Z")
    assert record["instance"] and "." not in record["instance"]

    await hr.runner.stop()

    async def gone() -> bool:
        return await records() == []

    await wait_until(gone, what="the heartbeat key to be deleted on a clean stop")
    status, body = await hr.client.get("/analytics/queue")
    assert status == 200 and body["runners"]["count"] == 0 and body["runners"]["utilisation"] == 0.0


def test_freshness_rule() -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime(2026, 2, 21, 10, 0, 0, tzinfo=UTC)

    def seen(ago_s: float, interval_s: float = 5.0) -> dict[str, Any]:
        return {"last_seen": (now - timedelta(seconds=ago_s)).isoformat(), "interval_s": interval_s}

    assert heartbeat.is_fresh(seen(1), now) and heartbeat.is_fresh(seen(14), now)
    assert not heartbeat.is_fresh(seen(16), now)
    assert heartbeat.is_fresh(seen(50, interval_s=20), now)
    assert not heartbeat.is_fresh({}, now) and not heartbeat.is_fresh({"last_seen": "garbage"}, now)


async def test_summary_counts_rates_and_durations(
    make_config: Callable[..., Any], start_stack: Callable[..., Any]
) -> None:
    hr = await start_stack(make_config(plugins={"echo": {}, "py_tool": {}}))
    client = hr.client
    ok = [await client.submit("echo", "poll", {"message": str(i)}) for i in range(3)]
    bad = await client.submit("py_tool", "fail")
    for job_id in [*ok, bad]:
        await client.wait_job(job_id)
    assert hr.api.bus is not None
    await hr.projector.wait_for(await hr.api.bus.stream_last_seq("EVENTS"))
    final_bad = (await client.get(f"/job/{bad}"))[1]["status"]

    status, body = await client.get("/analytics/summary")
    assert status == 200, body
    assert body["window_hours"] == 24 and body["total"] == 4
    assert body["by_status"]["succeeded"] == 3 and body["by_status"][final_bad] == 1
    assert set(body["by_status"]) >= {"queued", "running", "succeeded", "failed", "timed_out", "dead"}
    assert body["success_rate"] == 0.75
    p50, p95 = body["duration_ms"]["p50"], body["duration_ms"]["p95"]
    assert p50 is not None and p95 is not None and 0 <= p50 <= p95
    echo = body["plugins"]["echo"]
    assert echo["total"] == 3 and echo["success_rate"] == 1.0 and echo["by_status"]["succeeded"] == 3
    assert echo["duration_ms"]["p50"] is not None
    tool = body["plugins"]["py_tool"]
    assert tool["total"] == 1 and tool["success_rate"] == 0.0


async def test_summary_of_an_empty_window(client: Client) -> None:
    status, body = await client.get("/analytics/summary")
    assert status == 200
    assert body["total"] == 0 and body["success_rate"] is None and body["plugins"] == {}
    assert body["duration_ms"] == {"p50": None, "p95": None}


SECRETS = (
    "sekrit-api-key-1",
    "hunter2-password",
    "nested-token-3",
    "in-secrets-4",
    "cred-5",
    "pw-in-url-6",
    "agent-llm-key-7",
)


async def test_config_view_redacts_secrets(make_config: Callable[..., Any], start_stack: Callable[..., Any]) -> None:
    config = make_config(
        plugins={
            "echo": {
                "parallelism": 2,
                "config": {
                    "api_key": SECRETS[0],
                    "message": "Hello",
                    "Password": SECRETS[1],
                    "nested": {"deeper": {"Auth_Token": SECRETS[2], "region": "eu"}},
                    "credentials": [{"user": "u", "pass": SECRETS[4]}],
                    "endpoint": f"https://user:{SECRETS[5]}@example.com/hook",
                    "retries_enabled": True,
                },
                "secrets": {"webhook": SECRETS[3]},
            },
            "echo_py": {},
        }
    )
    hr = await start_stack(config)
    status, text = await hr.client.get("/config/view")
    assert status == 200
    raw = orjson.dumps(text).decode()
    for secret in SECRETS:
        assert secret not in raw, secret
    for token, _scopes in TOKENS.values():
        assert token not in raw
    body = text
    echo = body["plugins"]["echo"]
    assert echo["parallelism"] == 2 and echo["config"]["message"] == "Hello"
    assert echo["config"]["api_key"] == "[REDACTED]" and echo["config"]["Password"] == "[REDACTED]"
    assert echo["config"]["nested"]["deeper"] == {"Auth_Token": "[REDACTED]", "region": "eu"}
    assert echo["config"]["credentials"] == [{"user": "[REDACTED]", "pass": "[REDACTED]"}]
    assert echo["config"]["endpoint"] == "https://user:[REDACTED]@example.com/hook"
    assert echo["config"]["retries_enabled"] is True
    assert echo["secrets"] == {"webhook": "[REDACTED]"}
    tokens = body["api"]["auth"]["tokens"]
    assert {t["name"] for t in tokens} == set(TOKENS)
    assert all(set(t) == {"name", "scopes"} for t in tokens)
    assert next(t for t in tokens if t["name"] == "admin")["scopes"] == ["*"]
    assert body["service"]["name"] == "headrace-test"
    assert body["compiled_routes"] == {}


def test_redaction_rules() -> None:
    raw = {
        "api": {
            "listen": "127.0.0.1:8080",
            "auth": {"tokens": [{"name": "ci", "token": "tok-abcdefgh", "scopes": ["jobs:ro"]}]},
        },
        "plugins": {
            "keycloak": {
                "config": {
                    "client_secret": "s1",
                    "realm": "main",
                    "keys": ["k1", "k2"],
                    "timeout": 30,
                    "private_key": {"pem": "-----BEGIN"},
                }
            }
        },
        "agents": {"token_counter": {"llm": {"api_key": "sk-xyz", "model": "m"}}},
        "database": {"url": "postgresql://hr:dbpass@db:5432/hr"},
        "pipelines": [{"name": "flow", "on": "echo.poll", "steps": [{"uses": "echo"}, {"uses": "echo_py"}]}],
    }
    view = config_view.view(raw)
    text = orjson.dumps(view).decode()
    for secret in ("tok-abcdefgh", "s1", "k1", "sk-xyz", "dbpass", "BEGIN"):
        assert secret not in text, secret
    assert view["api"]["auth"] == {"tokens": [{"name": "ci", "scopes": ["jobs:ro"]}]}
    keycloak = view["plugins"]["keycloak"]["config"]  # a plugin *named* like a secret is not hidden
    assert keycloak["realm"] == "main" and keycloak["timeout"] == 30 and keycloak["keys"] == ["[REDACTED]"] * 2
    assert view["agents"]["token_counter"]["llm"] == {"api_key": "[REDACTED]", "model": "m"}
    assert view["database"]["url"] == "postgresql://hr:[REDACTED]@db:5432/hr"
    assert config_view.compiled_pipelines(raw["pipelines"]) == {"flow": {"on": "echo.poll", "steps": 2}}

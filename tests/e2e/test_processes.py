"""The echo job end to end through four separate `headrace <service>` OS processes, and
`headrace up` as a user runs it (embedded nats-server from the wheel, admin token printed)."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.support import infra, stack
from tests.support.upprocess import UpProcess

HOOK_SECRET = "ids-test-webhook-secret"


async def test_four_separate_processes(
    make_config: Any, nats_url: str, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Also what the processes log (JSON lines, at info): the lines of a request carry its request_id
    (echoed as X-Request-Id), and every runner and dispatcher line about a job its job_id and correlation_id."""
    from services.core import embedded

    monkeypatch.setenv("HR_TEST_IDS_SECRET", HOOK_SECRET)
    port = embedded.free_port()
    config = make_config(
        api={"listen": f"127.0.0.1:{port}", "auth": stack.config_doc()["api"]["auth"]},
        service={"log_level": "info"},
        plugins={"echo": {"parallelism": 2}, "exit78": {}},
        webhooks=[
            {
                "name": "ids",
                "path": "/hooks/ids",
                "plugin": "echo",
                "secret_ref": "HR_TEST_IDS_SECRET",
                "signature_header": "X-Signature",
            }
        ],
    )
    processes = stack.service_processes(
        config, port=port, nats_url=nats_url, database_url=database_url, log_dir=tmp_path
    )
    async with processes as (procs, client):
        job_id = await client.submit("echo", "poll", {"message": "from four processes"})
        done = await client.wait_job(job_id, timeout_s=30)
        assert done["status"] == "succeeded" and done["result"]["result"] == "Echoed: from four processes"
        hooked, dead = await _request_ids_round_trip(client)
        assert (await client.wait_job(hooked, timeout_s=30))["status"] == "succeeded"
        assert (await client.wait_job(dead, timeout_s=30))["status"] == "dead"
        for proc in procs:
            assert await proc.stop() == 0, (tmp_path / f"{proc.command}.log").read_text()[-2000:]
    logs = {name: _json_lines(tmp_path / f"{name}.log") for name in stack.SERVICE_NAMES}

    accepted = [line for line in logs["api"] if line["event"] == "webhook_accepted"]
    assert [(line.get("request_id"), line["job_id"]) for line in accepted] == [(REQUEST_ID, hooked)], accepted
    for name in ("runner", "dispatcher"):
        about_jobs = [line for line in logs[name] if "job_id" in line]
        assert all(line.get("correlation_id") for line in about_jobs), (name, about_jobs)
    finished = {line["job_id"]: line for line in logs["runner"] if line["event"] == "attempt_finished"}
    assert {job_id, hooked, dead} <= set(finished), finished
    for job, plugin, command in ((job_id, "echo", "poll"), (hooked, "echo", "handle"), (dead, "exit78", "poll")):
        line = finished[job]
        assert (line["correlation_id"], line["plugin"], line["command"]) == (job, plugin, command), line
    failed = [line for line in logs["dispatcher"] if line["event"] == "attempt_failed"]
    assert [(line["job_id"], line["correlation_id"], line["plugin"], line["command"]) for line in failed] == [
        (dead, dead, "exit78", "poll")
    ], failed


REQUEST_ID = "ids-test/req-1:abc"


async def _request_ids_round_trip(client: stack.Client) -> tuple[str, str]:
    """X-Request-Id answered as sent when acceptable, else a fresh one; returns the webhook's job and a job
    that fails for good (exit 78)."""
    body = b'{"message": "from a webhook"}'
    signature = hmac.new(HOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    async with aiohttp.ClientSession(client.base_url) as http:
        async with http.post(
            "/hooks/ids", data=body, headers={"X-Signature": signature, "X-Request-Id": REQUEST_ID}
        ) as resp:
            assert resp.status == 202, await resp.text()
            assert resp.headers["X-Request-Id"] == REQUEST_ID
            hooked = (await resp.json())["job_id"]
        fresh = set()
        for offered in (None, "x" * 129, "has space", "tab\there", ""):
            headers = {} if offered is None else {"X-Request-Id": offered}
            async with http.get("/healthz", headers=headers) as resp:
                answered = resp.headers["X-Request-Id"]
                assert re.fullmatch(r"[0-9a-f]{32}", answered) and answered != offered, (offered, answered)
                fresh.add(answered)
        assert len(fresh) == 5  # a new one each time
        # an error reply carries it too (its body stays the dialect's own shape)
        async with http.get("/jobs/nope", headers={"X-Request-Id": "err-1"}) as resp:
            assert resp.status in (401, 404) and resp.headers["X-Request-Id"] == "err-1"
            assert "request_id" not in await resp.json()
    dead = await client.submit("exit78", "poll", {})
    return hooked, dead


def _json_lines(path: Path) -> list[dict[str, Any]]:
    """The structlog JSON lines of a service's log (anything else it printed skipped)."""
    out = []
    for text in path.read_text().splitlines():
        if text.startswith("{"):
            out.append(orjson.loads(text))
    return out


async def test_headrace_up_prints_url_and_token_and_resumes(tmp_path: Path, postgres: infra.Postgres) -> None:
    from services.core import embedded

    database_url = await postgres.new_database()
    state = tmp_path / "state"
    port = embedded.free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "PYTHONPATH": str(stack.REPO)}
    argv = [
        sys.executable,
        "-m",
        "services.cli",
        "-c",
        str(stack.REPO / "config.example.yaml"),
        "up",
        "--state-dir",
        str(state),
        "--port",
        str(port),
    ]

    async def run_once(expect_token_printed: bool) -> str:
        up = UpProcess(argv, env=env, cwd=tmp_path)
        try:
            url_line = await up.readline()
            token_line = await up.readline()
            assert f"http://127.0.0.1:{port}" in url_line
            token = (state / "admin.token").read_text().strip()
            assert (token in token_line) is expect_token_printed
            assert (state / "nats.port").read_text().strip().isdigit()
            client = stack.Client(f"http://127.0.0.1:{port}", token=token)
            try:
                job_id = await client.submit("echo", "poll", {"message": "up"})
                done = await client.wait_job(job_id, timeout_s=30)
                assert done["status"] == "succeeded"
            finally:
                await client.close()
            return job_id
        finally:
            assert await up.stop() == 0

    first = await run_once(expect_token_printed=True)
    await run_once(expect_token_printed=False)
    # the second `up` resumed the same data: the first job is still there
    out = (state / "admin.token").read_text().strip()
    assert re.fullmatch(r"hr_[\w-]+", out)
    up = UpProcess(argv, env=env, cwd=tmp_path)
    try:
        await up.readline()
        client = stack.Client(f"http://127.0.0.1:{port}")
        try:
            status, body = await client.get(f"/job/{first}", token=out)
            assert status == 200 and body["status"] == "succeeded"
        finally:
            await client.close()
    finally:
        await up.stop()

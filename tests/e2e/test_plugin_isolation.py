"""What a plugin can see of the gateway, with real `headrace` processes: an in-process
(`protocol: python`) plugin finds neither the gateway's environment in `os.environ` nor in
`/proc/self/environ`, while config substitution and reloads still resolve every `${VAR}`."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.core import embedded, environment
from tests.support import infra, stack
from tests.support.upprocess import UpProcess

SECRETS = {
    "HR_TEST_WEBHOOK_SECRET": "whsec-never-for-plugins-1",
    "HR_TEST_PLUGIN_TOKEN": "plugin-token-by-request-2",
    "HR_TEST_UNRELATED": "unrelated-gateway-secret-3",
}


def isolation_doc(port: int, *, extra_secret: bool = False) -> dict[str, Any]:
    doc = stack.config_doc(plugins={"py_inproc": {"secrets": {"token": "${HR_TEST_PLUGIN_TOKEN}"}}})
    doc["api"] = {
        "listen": f"127.0.0.1:{port}",
        "auth": {"tokens": [{"name": "admin", "token": "${HEADRACE_ADMIN_TOKEN}", "scopes": ["*"]}]},
    }
    doc["secrets"] = {"hook": "${HR_TEST_WEBHOOK_SECRET}"}
    doc["webhooks"] = [{"name": "h", "path": "/hooks/h", "plugin": "py_inproc", "command": "env", "secret_ref": "hook"}]
    if extra_secret:
        doc["plugins"]["py_inproc"]["secrets"]["again"] = "${HR_TEST_UNRELATED}"
    return doc


def assert_sees_nothing_of_the_gateway(result: dict[str, Any], *, forbidden: list[str]) -> None:
    assert set(result["environ"]) <= set(environment.PLUGIN_ENV_ALLOWLIST), sorted(result["environ"])
    seen = repr(result["environ"]) + repr(result["proc_environ"])
    leaked = [value for value in forbidden if value in seen]
    assert not leaked, leaked
    assert not [p for p in result["proc_environ"] if p.split("=")[0] in ("DATABASE_URL", "HEADRACE_ADMIN_TOKEN")]


async def test_headrace_up_keeps_its_environment_from_in_process_plugins(
    tmp_path: Path, postgres: infra.Postgres
) -> None:
    database_url = await postgres.new_database()
    port = embedded.free_port()
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(isolation_doc(port)))
    state = tmp_path / "state"
    env = {**os.environ, **SECRETS, "DATABASE_URL": database_url, "PYTHONPATH": str(stack.REPO)}
    up = UpProcess(
        [sys.executable, "-m", "services.cli", "-c", str(config), "up", "--state-dir", str(state)],
        env=env,
        cwd=tmp_path,
    )
    try:
        assert f"127.0.0.1:{port}" in await up.readline()
        token = (state / "admin.token").read_text().strip()
        client = stack.Client(f"http://127.0.0.1:{port}", token=token)
        try:
            job_id = await client.submit("py_inproc", "env")
            done = await client.wait_job(job_id, timeout_s=30)
            assert done["status"] == "succeeded", done
            result = done["result"]["result"]
            assert result["secret_keys"] == ["token"]  # what the request hands over, it still gets
            assert_sees_nothing_of_the_gateway(result, forbidden=[database_url, token, *SECRETS.values()])

            # a reload still resolves ${VAR}s from the environment the process was started with
            config.write_text(yaml.safe_dump(isolation_doc(port, extra_secret=True)))
            status, body = await client.post("/system/reload")
            assert status == 200, body
            job_id = await client.submit("py_inproc", "env")
            done = await client.wait_job(job_id, timeout_s=30)
            assert done["result"]["result"]["secret_keys"] == ["again", "token"]
        finally:
            await client.close()
    finally:
        assert await up.stop() == 0


async def test_a_separate_runner_keeps_its_environment_from_in_process_plugins(
    nats_url: str, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.api.service import Api
    from services.dispatcher.service import Dispatcher
    from services.projector.service import Projector

    for key, value in {**SECRETS, "HEADRACE_ADMIN_TOKEN": stack.ADMIN}.items():
        monkeypatch.setenv(key, value)
    config = stack.write_config(tmp_path / "c.yaml", isolation_doc(0), nats_url=nats_url, database_url=database_url)
    services = [Projector(config), Dispatcher(config), Api(config, port=0)]
    for service in services:
        await service.start()
    runner = stack.ServiceProcess(
        "runner",
        config_path=config.path,
        nats_url=nats_url,
        database_url=database_url,
        extra_args=["--plugin", "py_inproc"],
        log_path=tmp_path / "runner.log",
    ).start()
    client = stack.Client(services[-1].url)  # type: ignore[attr-defined]
    try:
        done = await client.wait_job(await client.submit("py_inproc", "env"), timeout_s=30)
        assert done["status"] == "succeeded", done
        assert_sees_nothing_of_the_gateway(
            done["result"]["result"], forbidden=[database_url, nats_url, stack.ADMIN, *SECRETS.values()]
        )
    finally:
        await client.close()
        runner.kill()
        for service in reversed(services):
            await service.stop()

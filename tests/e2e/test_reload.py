"""POST /system/reload: validated, applied to every service via an event; an invalid file → 409."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.support import infra
from tests.support.stack import TOKENS, Client, config_doc


async def test_reload_applies_to_api_dispatcher_and_runner(make_config: Any, start_stack: Any,
                                                          tmp_path: Path) -> None:
    config = make_config(plugins={"echo": {}, "flaky": {"enabled": False}})
    s = await start_stack(config)
    status, body = await s.client.post("/plugin/flaky/poll", json={})
    assert status == 404 and "disabled" in body["error"]

    doc = config_doc(plugins={"echo": {"enabled": False}, "flaky": {"retry": {"max_attempts": 1}}})
    doc["api"]["auth"]["tokens"].append({"name": "new", "token": "freshly-added-token", "scopes": ["*"]})
    Path(config.path).write_text(yaml.safe_dump(doc))
    status, body = await s.client.post("/system/reload")
    assert status == 200 and body["status"] == "ok" and body["message"]

    fresh = Client(s.url, token="freshly-added-token")
    try:
        status, body = await fresh.post("/plugin/echo/poll", json={})
        assert status == 404 and "disabled" in body["error"]

        async def flaky_runs() -> Any:
            # the runner opens a mailbox for the newly enabled plugin when the reload event reaches it
            job_id = await fresh.submit("flaky", "poll", {"counter_file": str(tmp_path / "n"), "succeed_on": 1})
            return await fresh.wait_job(job_id, timeout_s=10)

        done = await infra.wait_until(flaky_runs, timeout_s=20, what="flaky runs after the reload")
        assert done["status"] == "succeeded"
        assert s.dispatcher.config.plugin("flaky").retry.max_attempts == 1  # the dispatcher took it too
    finally:
        await fresh.close()


async def test_an_invalid_file_is_409_and_the_old_config_stays(make_config: Any, start_stack: Any) -> None:
    config = make_config()
    s = await start_stack(config)
    Path(config.path).write_text("plugins: {echo: {parallelism: nope}}\n")
    status, body = await s.client.post("/system/reload")
    assert status == 409 and "plugins.echo.parallelism" in body["error"]
    job_id = await s.client.submit("echo", "poll", {"message": "still here"})
    assert (await s.client.wait_job(job_id))["status"] == "succeeded"
    Path(config.path).write_text("api: {listen: [broken\n")
    status, body = await s.client.post("/system/reload")
    assert status == 409 and "YAML" in body["error"]


async def test_reload_needs_the_star_scope(client: Client) -> None:
    for name in ("jobs_rw", "plugin_rw"):
        status, _ = await client.post("/system/reload", token=TOKENS[name][0])
        assert status == 403
    status, _ = await client.post("/system/reload", token=None)
    assert status == 401

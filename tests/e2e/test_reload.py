"""POST /system/reload: validated, applied to every service via an event; an invalid file → 409."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from tests.support import infra
from tests.support.stack import TEST_PLUGINS, TOKENS, Client, config_doc


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


async def test_a_plugin_directory_added_before_a_reload_runs_everywhere(make_config: Any, start_stack: Any,
                                                                        tmp_path: Path) -> None:
    """Only a plugin directory changes (the file stays byte for byte the same): API, dispatcher and
    runner all take the new plugin, so a job of it is accepted, dispatched and run."""
    root = tmp_path / "more_plugins"
    root.mkdir()
    config = make_config(plugins={"echo": {}}, plugin_roots=[*config_doc()["plugin_roots"], str(root)])
    s = await start_stack(config)
    status, _ = await s.client.post("/plugin/latecomer/poll", json={})
    assert status == 404

    plugin = root / "latecomer"
    plugin.mkdir()
    source = TEST_PLUGINS / "napper"
    (plugin / "manifest.yaml").write_text((source / "manifest.yaml").read_text().replace("name: napper",
                                                                                         "name: latecomer"))
    shutil.copy2(source / "run.py", plugin / "run.py")
    status, body = await s.client.post("/system/reload")
    assert status == 200, body

    async def runs() -> Any:
        job_id = await s.client.submit("latecomer", "poll", {"seconds": 0})
        return await s.client.wait_job(job_id, timeout_s=15)

    done = await infra.wait_until(runs, timeout_s=20, what="the new plugin's job")
    assert done["status"] == "succeeded", done
    assert s.dispatcher.catalog.get("latecomer") is not None and s.runner.catalog.get("latecomer") is not None


async def test_a_refused_reload_names_path_and_rule_never_the_secret(make_config: Any, start_stack: Any) -> None:
    config = make_config()
    s = await start_stack(config)
    doc = config_doc()
    short = len(doc["api"]["auth"]["tokens"])  # index of the token appended next
    doc["api"]["auth"]["tokens"] += [{"token": "SHRTPW7", "scopes": ["*"]}]
    doc["secrets"] = {"hook": 27182818284}
    Path(config.path).write_text(yaml.safe_dump(doc))
    status, body = await s.client.post("/system/reload")
    assert status == 409, body
    assert f"api.auth.tokens[{short}].token: is too short (minimum 8 characters)" in body["error"]
    assert "secrets.hook: must be of type string" in body["error"]
    assert "SHRTPW7" not in str(body) and "27182818284" not in str(body)

"""POST /system/reload: validated by and applied to every service before the 200; an invalid file → 409."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from tests.support.stack import TEST_PLUGINS, TOKENS, Client, config_doc


async def test_reload_applies_to_api_dispatcher_and_runner(make_config: Any, start_stack: Any, tmp_path: Path) -> None:
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

        # the 200 came after the runner opened a mailbox for the newly enabled plugin: no waiting
        job_id = await fresh.submit("flaky", "poll", {"counter_file": str(tmp_path / "n"), "succeed_on": 1})
        done = await fresh.wait_job(job_id, timeout_s=10)
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


async def test_a_plugin_directory_added_before_a_reload_runs_everywhere(
    make_config: Any, start_stack: Any, tmp_path: Path
) -> None:
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
    (plugin / "manifest.yaml").write_text(
        (source / "manifest.yaml").read_text().replace("name: napper", "name: latecomer")
    )
    shutil.copy2(source / "run.py", plugin / "run.py")
    status, body = await s.client.post("/system/reload")
    assert status == 200, body

    job_id = await s.client.submit("latecomer", "poll", {"seconds": 0})
    done = await s.client.wait_job(job_id, timeout_s=15)
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


async def test_the_200_lists_every_service_that_applied_it(make_config: Any, start_stack: Any) -> None:
    config = make_config()
    s = await start_stack(config)
    status, body = await s.client.post("/system/reload")
    assert status == 200, body
    assert set(body) == {"status", "reloaded_at", "message", "fingerprint", "services", "pending"}
    assert body["status"] == "ok" and body["message"] == "configuration reloaded" and body["pending"] == []
    assert sorted(x["service"] for x in body["services"]) == ["api", "dispatcher", "runner"]
    assert body["services"][0] == {
        "service": "api",
        "instance": s.api.participant.id,
        "source": s.api.participant.source,
    }


async def test_changes_a_reload_cannot_apply_are_rejected_as_ductile_does(
    make_config: Any, start_stack: Any, tmp_path: Path
) -> None:
    """Ductile's texts (§2.16): api.listen (and Headrace's service.state_dir) need a restart; nobody changes."""
    config = make_config(plugins={"echo": {}})
    s = await start_stack(config)
    auth = config_doc()["api"]["auth"]
    Path(config.path).write_text(
        yaml.safe_dump(config_doc(plugins={"echo": {}, "echo_py": {}}, api={"listen": "127.0.0.1:18089", "auth": auth}))
    )
    status, body = await s.client.post("/system/reload")
    assert status == 409, body
    assert body["error"] == "config reload rejected: changes to api.listen require a full restart"
    state_dir = str(tmp_path / "elsewhere")
    Path(config.path).write_text(
        yaml.safe_dump(config_doc(plugins={"echo": {}, "echo_py": {}}, service={"state_dir": state_dir}))
    )
    status, body = await s.client.post("/system/reload")
    assert status == 409, body
    assert body["error"] == "config reload rejected: changes to service.state_dir require a full restart"
    for service in (s.api, s.dispatcher, s.runner):
        assert "echo_py" not in service.config.plugins, service.name  # the rest of the edit was not taken either

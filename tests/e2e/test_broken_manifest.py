"""A broken manifest is skipped with a clear reason, shown in /healthz, and harms nothing else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.stack import REPO, TEST_PLUGINS


async def test_broken_manifests_are_reported_not_fatal(make_config: Any, start_stack: Any, tmp_path: Path) -> None:
    root = tmp_path / "more_plugins"
    (root / "no_commands").mkdir(parents=True)
    (root / "no_commands" / "manifest.yaml").write_text("name: no_commands\nprotocol: 2\nentrypoint: run.sh\n")
    (root / "bad_yaml").mkdir()
    (root / "bad_yaml" / "manifest.yaml").write_text("name: [unclosed\n")
    config = make_config(plugin_roots=[str(REPO / "plugins"), str(TEST_PLUGINS), str(root)])
    s = await start_stack(config)
    status, body = await s.client.get("/healthz", token=None)
    assert status == 200 and body["plugins_broken"] == 2 and "plugin_errors" not in body  # no paths without auth
    status, body = await s.client.get("/healthz")  # admin
    assert status == 200
    errors = {Path(e["path"]).parent.name: e["error"] for e in body["plugin_errors"]}
    assert set(errors) == {"no_commands", "bad_yaml"}
    assert "commands" in errors["no_commands"]
    status, plugins = await s.client.get("/plugins", token=None)
    assert "no_commands" not in {p["name"] for p in plugins["plugins"]}
    job_id = await s.client.submit("echo", "poll", {"message": "still fine"})
    assert (await s.client.wait_job(job_id))["status"] == "succeeded"

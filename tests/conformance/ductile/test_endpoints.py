"""Endpoints Ductile has that Headrace lacked (shared/spec/ductile-conformance.md §2.14, §2.15,
§2.18): GET /system/doctor, /system/selfcheck, /topology and /stopwatch/{plugin}, over HTTP with
Ductile's shapes and scopes."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import stack as stack_mod
from tests.support.stack import TOKENS, Client, Stack

#: a plugin that times its own parts (Ductile's `ductile_stopwatch_subs`) and declares what it emits
TIMED_MANIFEST = """\
manifest_spec: ductile.plugin
manifest_version: 1
name: timed
version: 1.2.3
protocol: 2
entrypoint: run.sh
commands:
  - name: handle
    type: write
    values: {emit: [{event: timed.done, values: [payload.x]}]}
  - {name: poll, type: write}
"""
TIMED_RUN = """\
#!/bin/sh
cat >/dev/null
printf '{"status":"ok","result":"timed","ductile_stopwatch_subs":[{"name":"fetch","dur_ns":3000000},{"name":"parse","dur_ns":1000000}]}\\n'
"""


@pytest.fixture
def timed_root(tmp_path: Path) -> Path:
    root = tmp_path / "plugins"
    plugin = root / "timed"
    plugin.mkdir(parents=True)
    (plugin / "manifest.yaml").write_text(TIMED_MANIFEST)
    run = plugin / "run.sh"
    run.write_text(TIMED_RUN)
    run.chmod(run.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return root


@pytest.mark.parametrize("path", ["/system/doctor", "/system/selfcheck", "/topology"])
async def test_system_routes_need_a_system_scope(client: Client, path: str) -> None:
    assert (await client.get(path, token=None))[0] == 401
    status, body = await client.get(path, token=TOKENS["jobs_rw"][0])
    assert status == 403 and body["required_scopes"] == ["system:ro", "system:rw"], body
    assert (await client.get(path))[0] == 200


async def test_doctor_reports_the_config_on_disk(make_config: Any, start_stack: Any) -> None:
    hr: Stack = await start_stack(make_config())
    status, body = await hr.client.get("/system/doctor")
    assert status == 200, body
    assert body["ok"] is True and body["captured_at"].endswith("Z") and body["checks"] == []
    assert hr.config.path is not None
    hr.config.path.write_text(hr.config.path.read_text() + "\nfrobnicate: 1\n")
    status, body = await hr.client.get("/system/doctor")
    assert status == 200 and body["ok"] is False, body
    (check,) = body["checks"]
    assert check["name"] == "config" and check["ok"] is False and check["severity"] == "error"
    assert "frobnicate" in check["detail"]


async def test_doctor_warns_of_a_configured_plugin_without_a_manifest(
    make_config: Any, start_stack: Any, tmp_path: Path
) -> None:
    hr: Stack = await start_stack(make_config())
    broken = tmp_path / "broken-root" / "broken"
    broken.mkdir(parents=True)
    (broken / "manifest.yaml").write_text("name: broken\n")
    assert hr.config.path is not None
    doc = stack_mod.config_doc()
    doc["plugin_roots"].append(str(broken.parent))
    hr.config.path.write_text(yaml.safe_dump(doc))
    status, body = await hr.client.get("/system/doctor")
    assert status == 200 and body["ok"] is True, body  # warnings leave the top `ok` alone
    (warning,) = body["checks"]
    assert warning["severity"] == "warning" and warning["ok"] is False and "broken" in warning["detail"]


async def test_doctor_knows_the_built_in_agent_and_prompt_plugins(make_config: Any, start_stack: Any) -> None:
    """`agent` and `prompt` have no manifest (the runner serves them): configuring them is no warning."""
    hr: Stack = await start_stack(make_config(plugins={"echo": {}, "agent": {}, "prompt": {}}))
    status, body = await hr.client.get("/system/doctor")
    assert status == 200 and body["ok"] is True and body["checks"] == [], body


async def test_selfcheck_checks_the_running_gateway(client: Client) -> None:
    status, body = await client.get("/system/selfcheck")
    assert status == 200, body
    checks = {c["name"]: c for c in body["checks"]}
    assert set(checks) == {"nats", "postgres", "runners", "plugins"}
    assert all(c["ok"] is True and "severity" not in c and c["detail"] for c in checks.values())
    assert body["ok"] is True and body["captured_at"].endswith("Z")


async def test_topology_is_the_pipeline_graph(make_config: Any, start_stack: Any, timed_root: Path) -> None:
    doc_roots = [*stack_mod.config_doc()["plugin_roots"], str(timed_root)]
    pipelines = [
        {
            "name": "flow",
            "on": "thing.happened",
            "steps": [{"id": "one", "uses": "timed"}, {"id": "two", "uses": "echo"}],
        }
    ]
    hr: Stack = await start_stack(
        make_config(plugin_roots=doc_roots, pipelines=pipelines, plugins={"echo": {}, "timed": {}})
    )
    status, body = await hr.client.get("/topology")
    assert status == 200, body
    assert body["captured_at"].endswith("Z") and body["version"]
    plugins = {p["name"]: p for p in body["plugins"]}
    assert [p["name"] for p in body["plugins"]] == sorted(plugins)
    timed = plugins["timed"]
    assert timed["version"] == "1.2.3" and timed["active"] is True
    assert timed["inputs"] == [{"signal": "thing.happened", "command": "handle"}]
    assert timed["outputs"] == [{"signal": "timed.done", "command": "handle"}]
    assert plugins["echo"]["inputs"] == [{"signal": "timed.done", "command": "handle"}]
    signals = {s["name"]: s for s in body["signals"]}
    assert signals["timed.done"] == {
        "name": "timed.done",
        "producers": [{"plugin": "timed", "command": "handle"}],
        "consumers": [{"plugin": "echo", "command": "handle"}],
    }
    assert signals["thing.happened"]["producers"] == []


async def test_stopwatch_percentiles_trend_and_subs(make_config: Any, start_stack: Any, timed_root: Path) -> None:
    doc_roots = [*stack_mod.config_doc()["plugin_roots"], str(timed_root)]
    hr: Stack = await start_stack(make_config(plugin_roots=doc_roots, plugins={"timed": {}}))
    ids = [await hr.client.submit("timed", "poll") for _ in range(3)]
    for job_id in ids:
        await hr.client.wait_job(job_id)
    assert hr.api.bus is not None
    await hr.projector.wait_for(await hr.api.bus.stream_last_seq("EVENTS"))

    status, body = await hr.client.get("/stopwatch/timed", token=TOKENS["jobs_ro"][0])
    assert status == 200, body
    assert body["plugin"] == "timed" and body["window"] == "1h" and body["captured_at"].endswith("Z")
    (step,) = body["steps"]
    assert step["step"] == "" and step["sample_count"] == 3
    assert 0 <= step["p50_ms"] <= step["p95_ms"] <= step["p99_ms"]
    assert len(step["trend_p95_ms"]) == 6 and step["trend_p95_ms"][-1] == step["p95_ms"]
    assert "subs" not in step

    status, body = await hr.client.get("/stopwatch/timed?window=5m&include_subs=true")
    assert status == 200 and body["window"] == "5m", body
    subs = {s["name"]: s for s in body["steps"][0]["subs"]}
    assert subs["fetch"] == {"name": "fetch", "sample_count": 3, "p50_ms": 3, "p95_ms": 3, "p99_ms": 3}
    assert subs["parse"]["p50_ms"] == 1

    status, body = await hr.client.get("/stopwatch/timed?window=2h")
    assert status == 400 and body["error"] == "invalid window (use 5m, 1h, or 24h)"
    status, body = await hr.client.get("/stopwatch/nobody")
    assert status == 200 and body["steps"] == []
    assert (await hr.client.get("/stopwatch/timed", token=TOKENS["plugin_rw"][0]))[0] == 403

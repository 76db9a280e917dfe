"""POST /system/reload across the four services as OS processes, all or nothing:

- a Ductile-style pipelines file (unquoted `on:`) with a `uses` alias added by reload is 200 only
  once API, dispatcher and runner have applied it: the first job after the 200 takes the new
  pipeline, with no waiting in between, and every member's heartbeat carries the new fingerprint;
- an invalid edit is 409 and everyone keeps the previous config;
- an edit that only the runner cannot read (a `${VAR}` missing from the environment it was started
  with; the environment is sealed at start) is 409 naming the runner, and nobody switched: the API
  does not know the new alias, the dispatcher does not route the new pipeline, every member still
  reports the previous fingerprint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from services.core import bus as bus_mod
from services.core import embedded, members
from services.dispatcher import routing
from tests.conformance.ductile.test_pipeline_chain import PIPELINES_YAML
from tests.support import infra, stack

#: set for the API, dispatcher and projector, missing from the runner's environment
GREETING_VAR = "HR_RELOAD_TEST_GREETING"
ROLES = {"api", "dispatcher", "runner"}

WHISPER_PIPELINE = """\
  - name: echo-whispered
    on: echo.handled
    from_plugin: echo
    steps:
      - id: whisper
        uses: whisper
"""


async def member_fingerprints(bus: bus_mod.Bus) -> dict[str, str]:
    """role → the fingerprint of the config that member serves (one member per role here)."""
    found = await members.alive(bus)
    assert sorted(r["role"] for r in found) == sorted(ROLES), found
    return {r["role"]: r["fingerprint"] for r in found}


async def test_reload_is_all_or_nothing_across_processes(
    make_config: Any, nats_url: str, database_url: str, tmp_path: Path
) -> None:
    port = embedded.free_port()
    api = {"listen": f"127.0.0.1:{port}", "auth": stack.config_doc()["api"]["auth"]}
    config = make_config(api=api, plugins={"echo": {}, "echo_py": {}}, service={"log_level": "info"})
    procs = [
        stack.ServiceProcess(
            name,
            config_path=config.path,
            nats_url=nats_url,
            database_url=database_url,
            log_path=tmp_path / f"{name}.log",
            env={GREETING_VAR: None if name == "runner" else "psst"},
        ).start()
        for name in ("projector", "dispatcher", "runner", "api")
    ]
    client = stack.Client(f"http://127.0.0.1:{port}")
    observer = await bus_mod.open_for(config, name="test-observer")
    try:
        await stack.wait_healthy(client.base_url)

        async def all_members() -> dict[str, str] | None:
            found = await members.alive(observer)
            return {r["role"]: r["fingerprint"] for r in found} if {r["role"] for r in found} == ROLES else None

        started = await infra.wait_until(all_members, timeout_s=30, what="api, dispatcher and runner to register")
        assert len(set(started.values())) == 1, started

        path = Path(config.path)
        doc = stack.config_doc(
            plugins={"echo": {}, "echo_py": {}, "shout": {"uses": "echo"}}, api=api, service={"log_level": "info"}
        )
        (path.parent / "pipelines.yaml").write_text(PIPELINES_YAML)
        path.write_text(yaml.safe_dump(doc, sort_keys=False) + "include:\n  - pipelines.yaml\n")
        status, body = await client.post("/system/reload")
        assert status == 200, body
        assert body["status"] == "ok" and body["message"] == "configuration reloaded", body
        assert len(body["reloaded_at"]) == len("2026-03-02T00:00:00Z") and body["reloaded_at"].endswith("Z")
        assert sorted(s["service"] for s in body["services"]) == sorted(ROLES) and body["pending"] == [], body
        reloaded = body["fingerprint"]
        assert reloaded != next(iter(started.values()))
        # each member writes its heartbeat after applying and before acking: read once, no waiting
        assert await member_fingerprints(observer) == dict.fromkeys(ROLES, reloaded)

        async def chain_fires(marker: str) -> str:
            job_id = await client.submit("echo", "handle", {"marker": marker})
            first = routing.derived_id(f"{job_id}:0", "echo-handled")
            done = await client.wait_job(first, {"succeeded", "failed"}, timeout_s=30, may_not_exist_yet=True)
            assert done["status"] == "succeeded", done
            return job_id

        # the very first job after the 200: the dispatcher routes the new pipeline, the runner runs the alias
        await chain_fires("right after the reload")

        (path.parent / "pipelines.yaml").write_text(PIPELINES_YAML.replace("uses: shout", "uses: nobody"))
        status, body = await client.post("/system/reload")
        assert status == 409 and "unknown plugin 'nobody'" in body["error"], body
        assert await member_fingerprints(observer) == dict.fromkeys(ROLES, reloaded)
        await chain_fires("after the refused reload")  # everyone kept the previous config
        status, plugin = await client.get("/plugin/shout")
        assert status == 200, plugin

        # valid for the API and the dispatcher, unreadable for the runner (its environment lacks the variable)
        (path.parent / "pipelines.yaml").write_text(PIPELINES_YAML + WHISPER_PIPELINE)
        doc["plugins"]["whisper"] = {"uses": "echo_py", "config": {"greeting": "${" + GREETING_VAR + "}"}}
        path.write_text(yaml.safe_dump(doc, sort_keys=False) + "include:\n  - pipelines.yaml\n")
        status, body = await client.post("/system/reload")
        assert status == 409, body
        assert f"environment variable ${{{GREETING_VAR}}} is not set" in body["error"], body
        assert [f["service"] for f in body["failed"]] == ["runner"], body
        assert body["error"].count("runner/") == 1 and "dispatcher/" not in body["error"], body
        assert await member_fingerprints(observer) == dict.fromkeys(ROLES, reloaded)  # nobody switched
        status, plugin = await client.get("/plugin/whisper")
        assert status == 404, plugin  # the API still serves the previous config
        job_id = await chain_fires("after the runner refused")
        # both pipelines start on the same event in one routing decision: had the dispatcher taken the new
        # config, the whisper pipeline's root would be stored by now
        status, whispered = await client.get(f"/job/{routing.derived_id(f'{job_id}:0', 'echo-whispered')}")
        assert status == 404, whispered

        for proc in procs:
            assert await proc.stop() == 0, (tmp_path / f"{proc.command}.log").read_text()[-2000:]
    finally:
        await observer.close()
        await client.close()
        for proc in procs:
            proc.kill()

"""POST /system/reload across the four services as OS processes: a Ductile-style pipelines file
(unquoted `on:`) with a `uses` alias added by reload is 200 and then fires end to end, so API,
dispatcher and runner all took it; an invalid edit is 409 and all of them keep the old one.

The reload is sent as soon as the API answers, while the runner may still be opening its mailboxes
(before it subscribes to reload announcements): it must catch up (services/core/reloads.py), else
the alias's job stays queued for good (it did in about half the runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from services.dispatcher import routing
from tests.conformance.ductile.test_pipeline_chain import PIPELINES_YAML
from tests.support import infra, stack


async def test_reload_is_all_or_nothing_across_processes(
    make_config: Any, nats_url: str, database_url: str, tmp_path: Path
) -> None:
    from services.core import embedded

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
        ).start()
        for name in ("projector", "dispatcher", "runner", "api")
    ]
    client = stack.Client(f"http://127.0.0.1:{port}")
    try:
        await stack.wait_healthy(client.base_url)
        path = Path(config.path)
        doc = stack.config_doc(
            plugins={"echo": {}, "echo_py": {}, "shout": {"uses": "echo"}}, api=api, service={"log_level": "info"}
        )
        (path.parent / "pipelines.yaml").write_text(PIPELINES_YAML)
        path.write_text(yaml.safe_dump(doc, sort_keys=False) + "include:\n  - pipelines.yaml\n")
        status, body = await client.post("/system/reload")
        assert status == 200, body

        async def chain_fires(marker: str) -> None:
            job_id = await client.submit("echo", "handle", {"marker": marker})
            first = routing.derived_id(f"{job_id}:0", "echo-handled")
            done = await client.wait_job(first, {"succeeded", "failed"}, timeout_s=30, may_not_exist_yet=True)
            assert done["status"] == "succeeded", done

        async def fired_after_reload() -> bool:
            # the other services apply a reload when its event reaches them, shortly after the 200
            job_id = await client.submit("echo", "handle", {"marker": "after the reload"})
            await client.wait_job(job_id, timeout_s=20)
            first = routing.derived_id(f"{job_id}:0", "echo-handled")
            try:
                done = await client.wait_job(first, {"succeeded", "failed"}, timeout_s=3, may_not_exist_yet=True)
            except AssertionError:
                return False
            return done["status"] == "succeeded"

        await infra.wait_until(fired_after_reload, timeout_s=30, what="the chain after the reload")

        (path.parent / "pipelines.yaml").write_text(PIPELINES_YAML.replace("uses: shout", "uses: nobody"))
        status, body = await client.post("/system/reload")
        assert status == 409 and "unknown plugin 'nobody'" in body["error"], body
        await chain_fires("after the refused reload")  # everyone kept the previous config
        status, plugin = await client.get("/plugin/shout")
        assert status == 200, plugin
        for proc in procs:
            assert await proc.stop() == 0, (tmp_path / f"{proc.command}.log").read_text()[-2000:]
    finally:
        await client.close()
        for proc in procs:
            proc.kill()

"""A pipeline chain written exactly as Ductile's config/pipelines.yaml writes one (unquoted `on:`,
block style, an include of its own), with a `uses` alias as a step, fires end to end through
HTTP; and POST /system/reload of that config answers 200 (it was a 500 in config.fingerprint)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from services.core import config as config_mod
from services.dispatcher import routing
from tests.support.infra import wait_until

# as in Ductile's config/pipelines.yaml: an event type after a bare `on:`
PIPELINES_YAML = """\
# Example pipelines configuration
pipelines:
  - name: echo-handled
    on: echo.handled
    from_plugin: echo
    steps:
      - id: shout
        uses: shout

  - name: shout-handled
    on: echo.handled
    from_plugin: shout
    steps:
      - id: react
        uses: echo_py
"""


def ductile_config(make_config: Any, nats_url: str, database_url: str) -> config_mod.Config:
    base = make_config(plugins={"echo": {}, "echo_py": {}, "shout": {"uses": "echo", "config": None}})
    path = Path(base.path)
    (path.parent / "pipelines.yaml").write_text(PIPELINES_YAML)
    path.write_text(path.read_text() + "include:\n  - pipelines.yaml\n")
    return config_mod.load(path, env={**os.environ, "NATS_URL": nats_url, "DATABASE_URL": database_url})


async def test_an_unquoted_on_chain_fires_through_an_alias(
    make_config: Any, start_stack: Any, nats_url: str, database_url: str
) -> None:
    config = ductile_config(make_config, nats_url, database_url)
    assert config.routes.pipelines["echo-handled"].trigger == "echo.handled"
    s = await start_stack(config)
    job_id = await s.client.submit("echo", "handle", {"kind": "video"})
    assert (await s.client.wait_job(job_id))["status"] == "succeeded"

    first = routing.derived_id(f"{job_id}:0", "echo-handled")
    done = await s.client.wait_job(first, {"succeeded", "failed"}, may_not_exist_yet=True)
    assert done["status"] == "succeeded", done

    async def shout_step() -> Any:
        status, tree = await s.client.get(f"/job/{first}/tree")
        nodes = [n for n in tree if n.get("step_id") == "shout" and n["status"] == "succeeded"] if status == 200 else []
        return nodes[0] if nodes else None

    shout = await wait_until(shout_step, timeout_s=15, what="the alias step in the tree")
    assert shout["plugin"] == "shout"  # the alias ran under its own name, the aliased plugin's code
    assert shout["result"]["result"]["echo"] == {"kind": "video"}

    second = routing.derived_id(f"{shout['job_id']}:0", "shout-handled")
    done = await s.client.wait_job(second, {"succeeded", "failed"}, may_not_exist_yet=True)
    assert done["status"] == "succeeded" and done["parent_job_id"] == shout["job_id"]


async def test_an_alias_runs_directly_over_http(
    make_config: Any, start_stack: Any, nats_url: str, database_url: str
) -> None:
    s = await start_stack(ductile_config(make_config, nats_url, database_url))
    status, body = await s.client.get("/plugin/shout")
    assert status == 200, body
    job_id = await s.client.submit("shout", "poll", {"message": "via the alias"})
    done = await s.client.wait_job(job_id)
    assert done["status"] == "succeeded" and done["plugin"] == "shout"


async def test_reload_of_a_config_with_on_pipelines_is_200(
    make_config: Any, start_stack: Any, nats_url: str, database_url: str
) -> None:
    config = ductile_config(make_config, nats_url, database_url)
    s = await start_stack(config)
    status, body = await s.client.post("/system/reload")
    assert status == 200, body
    # an invalid edit of the included file: 409, and the old chain still fires
    (Path(config.path).parent / "pipelines.yaml").write_text(PIPELINES_YAML.replace("uses: shout", "uses: nobody"))
    status, body = await s.client.post("/system/reload")
    assert status == 409 and "unknown plugin 'nobody'" in body["error"], body
    job_id = await s.client.submit("echo", "handle", {"again": True})
    first = routing.derived_id(f"{job_id}:0", "echo-handled")
    done = await s.client.wait_job(first, {"succeeded", "failed"}, may_not_exist_yet=True)
    assert done["status"] == "succeeded"


async def test_reload_with_only_an_unquoted_on_pipeline_is_200(make_config: Any, start_stack: Any) -> None:
    """Nothing but an `on:` pipeline in the file (the 500 `Dict key must be str` in config.fingerprint)."""
    config = make_config(plugins={"echo": {}, "echo_py": {}})
    s = await start_stack(config)
    path = Path(config.path)
    path.write_text(
        path.read_text() + "pipelines:\n  - name: p\n    on: echo.handled\n    steps:\n      - uses: echo_py\n"
    )
    status, body = await s.client.post("/system/reload")
    assert status == 200, body
    job_id = await s.client.submit("echo", "handle", {"after": "reload"})
    done = await s.client.wait_job(
        routing.derived_id(f"{job_id}:0", "p"), {"succeeded", "failed"}, may_not_exist_yet=True
    )
    assert done["status"] == "succeeded"

"""Subprocess plugins run as an unprivileged user when the runner is root (these tests run as
root): the plugin reports its ids; an unknown user is a config error; a plugin directory the user
may not enter fails with an error naming it; the plugin still dies with a SIGKILLed runner."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.api.service import Api
from services.core import errors
from services.dispatcher.service import Dispatcher
from services.projector.service import Projector
from tests.integration.test_crash_safety import _gone, _marker_lines
from tests.support import infra, stack

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the drop needs a root runner")
try:  # the default plugin user: the dedicated one where it exists
    NOBODY = pwd.getpwnam("headrace-plugin")
except KeyError:
    NOBODY = pwd.getpwnam("nobody")


def user_config(tmp_path: Path, nats_url: str, database_url: str, **service: Any) -> Any:
    doc = stack.config_doc(plugins={"ids": {"retry": {"max_attempts": 1}}})
    del doc["service"]["plugin_user"]
    doc["service"].update(service)
    return stack.write_config(tmp_path / "c.yaml", doc, nats_url=nats_url, database_url=database_url)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user may write (the pytest tmp dirs are root's only)."""
    path = Path(tempfile.mkdtemp(prefix="headrace-plugin-user-"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_plugins_run_as_nobody_by_default(
    nats_url: str, database_url: str, tmp_path: Path, start_stack: Any
) -> None:
    secret = tmp_path / "root-only"
    secret.write_text("x")
    secret.chmod(0o600)
    s = await start_stack(user_config(tmp_path, nats_url, database_url))
    done = await s.client.wait_job(await s.client.submit("ids", "poll", {"probe": str(secret)}))
    assert done["status"] == "succeeded", done
    seen = done["result"]["result"]
    assert (seen["uid"], seen["euid"], seen["gid"]) == (NOBODY.pw_uid, NOBODY.pw_uid, NOBODY.pw_gid)
    assert set(seen["groups"]) <= {NOBODY.pw_gid}  # root's supplementary groups are gone
    assert seen["cwd"] == str(stack.TEST_PLUGINS / "ids") and seen["home"] == NOBODY.pw_dir
    assert seen["user"] == NOBODY.pw_name and seen["opened"] == "Permission denied"


async def test_a_configured_user_and_a_directory_it_may_not_enter(
    nats_url: str, database_url: str, tmp_path: Path, start_stack: Any
) -> None:
    hidden = tmp_path / "hidden"  # under the root-only pytest tmp dir
    shutil.copytree(stack.TEST_PLUGINS / "ids", hidden / "ids_hidden")
    manifest = hidden / "ids_hidden" / "manifest.yaml"
    manifest.write_text(manifest.read_text().replace("name: ids", "name: ids_hidden"))
    config = user_config(tmp_path, nats_url, database_url, plugin_user="4242")
    doc_roots = [*config.raw["plugin_roots"], str(hidden)]
    config = stack.write_config(
        tmp_path / "c.yaml", {**config.raw, "plugin_roots": doc_roots}, nats_url=nats_url, database_url=database_url
    )
    s = await start_stack(config)
    done = await s.client.wait_job(await s.client.submit("ids", "poll"))
    assert done["status"] == "succeeded", done
    assert (done["result"]["result"]["uid"], done["result"]["result"]["gid"]) == (4242, 4242)
    done = await s.client.wait_job(await s.client.submit("ids_hidden", "poll"))
    assert done["status"] in ("failed", "dead"), done
    assert "plugin user 4242 (uid 4242) may not enter /tmp/pytest-of-root" in done["last_error"]

    bad = user_config(tmp_path, nats_url, database_url, plugin_user="no-such-user-here")
    from services.runner.service import Runner

    with pytest.raises(errors.ConfigError, match="no such user 'no-such-user-here'"):
        Runner(bad)


async def test_a_dropped_plugin_still_dies_with_its_runner(
    nats_url: str, database_url: str, tmp_path: Path, shared_dir: Path
) -> None:
    config = user_config(tmp_path, nats_url, database_url)
    services = [Projector(config), Dispatcher(config), Api(config, port=0)]
    for service in services:
        await service.start()
    runner = stack.ServiceProcess(
        "runner",
        config_path=config.path,
        nats_url=nats_url,
        database_url=database_url,
        log_path=tmp_path / "runner.log",
    ).start()
    client = stack.Client(services[-1].url)  # type: ignore[attr-defined]
    marker = shared_dir / "starts"
    try:
        await client.submit("ids", "poll", {"seconds": 30, "marker": str(marker)})
        await infra.wait_until(lambda: _marker_lines(marker), timeout_s=30, what="the plugin started")
        pid = int(marker.read_text().split()[1])
        assert os.stat(f"/proc/{pid}").st_uid == NOBODY.pw_uid
        runner.kill()
        await infra.wait_until(lambda: _gone(pid), timeout_s=5, what="the plugin to die with its runner")
    finally:
        await client.close()
        runner.kill()
        for service in reversed(services):
            await service.stop()

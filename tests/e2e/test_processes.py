"""The echo job end to end through four separate `headrace <service>` OS processes, and
`headrace up` as a user runs it (embedded nats-server from the wheel, admin token printed)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

from tests.support import infra, stack
from tests.support.upprocess import UpProcess


async def test_four_separate_processes(make_config: Any, nats_url: str, database_url: str, tmp_path: Path) -> None:
    from services.core import embedded

    port = embedded.free_port()
    config = make_config(api={"listen": f"127.0.0.1:{port}", "auth": stack.config_doc()["api"]["auth"]})
    processes = stack.service_processes(
        config, port=port, nats_url=nats_url, database_url=database_url, log_dir=tmp_path
    )
    async with processes as (procs, client):
        job_id = await client.submit("echo", "poll", {"message": "from four processes"})
        done = await client.wait_job(job_id, timeout_s=30)
        assert done["status"] == "succeeded" and done["result"]["result"] == "Echoed: from four processes"
        for proc in procs:
            assert await proc.stop() == 0, (tmp_path / f"{proc.command}.log").read_text()[-2000:]


async def test_headrace_up_prints_url_and_token_and_resumes(tmp_path: Path, postgres: infra.Postgres) -> None:
    from services.core import embedded

    database_url = await postgres.new_database()
    state = tmp_path / "state"
    port = embedded.free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "PYTHONPATH": str(stack.REPO)}
    argv = [
        sys.executable,
        "-m",
        "services.cli",
        "-c",
        str(stack.REPO / "config.example.yaml"),
        "up",
        "--state-dir",
        str(state),
        "--port",
        str(port),
    ]

    async def run_once(expect_token_printed: bool) -> str:
        up = UpProcess(argv, env=env, cwd=tmp_path)
        try:
            url_line = await up.readline()
            token_line = await up.readline()
            assert f"http://127.0.0.1:{port}" in url_line
            token = (state / "admin.token").read_text().strip()
            assert (token in token_line) is expect_token_printed
            assert (state / "nats.port").read_text().strip().isdigit()
            client = stack.Client(f"http://127.0.0.1:{port}", token=token)
            try:
                job_id = await client.submit("echo", "poll", {"message": "up"})
                done = await client.wait_job(job_id, timeout_s=30)
                assert done["status"] == "succeeded"
            finally:
                await client.close()
            return job_id
        finally:
            assert await up.stop() == 0

    first = await run_once(expect_token_printed=True)
    await run_once(expect_token_printed=False)
    # the second `up` resumed the same data: the first job is still there
    out = (state / "admin.token").read_text().strip()
    assert re.fullmatch(r"hr_[\w-]+", out)
    up = UpProcess(argv, env=env, cwd=tmp_path)
    try:
        await up.readline()
        client = stack.Client(f"http://127.0.0.1:{port}")
        try:
            status, body = await client.get(f"/job/{first}", token=out)
            assert status == 200 and body["status"] == "succeeded"
        finally:
            await client.close()
    finally:
        await up.stop()

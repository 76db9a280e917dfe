"""`headrace up` whose API port is taken ends with one clear line naming the way out (`--port`,
`make run PORT=`), no traceback, and a non-zero exit; `make run PORT=N` passes `--port N`."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.support import stack


async def test_up_on_a_taken_port_says_how_to_choose_another(tmp_path: Path, database_url: str) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": str(stack.REPO), "DATABASE_URL": database_url}
        env.pop("NATS_URL", None)
        config = str(stack.REPO / "config.example.yaml")
        argv = ["-m", "services.cli", "-c", config, "up", "--state-dir", str(tmp_path / "state"), "--port", str(port)]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *argv, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 1, (out, err)
    assert b"Headrace is up" not in out
    stderr = err.decode()
    assert "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"headrace: error: cannot listen on 127.0.0.1:{port}: the port is in use"), stderr
    assert "--port" in last and "make run PORT=" in last
    # said before anything started: the embedded nats-server never got its store
    assert not (tmp_path / "state" / "nats").exists()


def test_make_run_passes_port() -> None:
    def run_line(*args: str) -> str:
        dry = subprocess.run(["make", "-n", "run", *args], cwd=stack.REPO, capture_output=True, text=True, check=True)
        return next(line for line in dry.stdout.splitlines() if " up --config " in line)

    assert run_line("PORT=8123").endswith("up --config config.example.yaml --port 8123")
    assert "--port" not in run_line()

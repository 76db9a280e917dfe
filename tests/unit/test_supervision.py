"""Subprocess supervision on tiny scripts written to tmp_path: request on stdin, minimal
environment, deadline (SIGTERM, grace, SIGKILL), output caps, children that outlive the
plugin, cancellation, spawn errors."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import orjson
import pytest

from services.core import config as config_mod
from services.runner import supervision

PY = sys.executable


def script(tmp_path: Path, body: str, *, name: str = "plugin", shell: bool = False) -> Path:
    path = tmp_path / name
    interpreter = "/bin/sh" if shell else PY
    path.write_text(f"#!{interpreter}\n" + textwrap.dedent(body).lstrip())
    path.chmod(0o755)
    return path


async def run(
    path: Path,
    request: bytes = b'{"protocol": 2}',
    *,
    timeout_s: float = 10.0,
    cancel: asyncio.Event | None = None,
    term_grace_s: float = supervision.TERM_GRACE_S,
    env: dict[str, str] | None = None,
) -> supervision.RawRun:
    return await supervision.run(
        path,
        request,
        timeout_s=timeout_s,
        env=env or config_mod.plugin_base_env(),
        cwd=path.parent,
        cancel=cancel,
        term_grace_s=term_grace_s,
    )


def gone(pid: int) -> bool:
    """True when `pid` no longer runs (absent, or a zombie nobody has reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rpartition(")")[2].split()[0] in {"Z", "X"}


async def wait_gone(pid: int, timeout_s: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not gone(pid):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def kill_quietly(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


async def test_request_arrives_on_stdin_and_stdout_comes_back(tmp_path: Path) -> None:
    path = script(
        tmp_path,
        """
        import json, os, sys
        req = json.load(sys.stdin)
        print(json.dumps({"status": "ok", "result": {"got": req, "cwd": os.getcwd()}}))
    """,
    )
    request = orjson.dumps({"protocol": 2, "job_id": "j", "payload": {"k": "v" * 100_000}})
    result = await run(path, request)
    assert result.exit_code == 0 and not result.timed_out and not result.stdout_truncated
    answer = orjson.loads(result.stdout)
    assert answer["result"]["got"] == orjson.loads(request)
    assert answer["result"]["cwd"] == str(tmp_path)  # runs in its own directory


async def test_environment_is_the_minimal_allowlist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADRACE_SECRET_TEST", "do-not-leak")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "nope")
    path = script(
        tmp_path,
        """
        import json, os
        print(json.dumps(dict(os.environ)))
    """,
    )
    result = await run(path, env=config_mod.plugin_base_env())
    seen = orjson.loads(result.stdout)
    assert "HEADRACE_SECRET_TEST" not in seen and "AWS_SECRET_ACCESS_KEY" not in seen
    assert "do-not-leak" not in result.stdout.decode()
    assert "PATH" in seen
    allowed = set(config_mod.PLUGIN_ENV_ALLOWLIST) | {"PWD", "SHLVL", "_", "LC_CTYPE"}
    assert set(seen) <= allowed, set(seen) - allowed


async def test_deadline_terminates_the_plugin(tmp_path: Path) -> None:
    path = script(tmp_path, "sleep 30\n", shell=True)
    started = time.monotonic()
    result = await run(path, timeout_s=0.3)
    assert result.timed_out and result.exit_code == -signal.SIGTERM
    assert time.monotonic() - started < 3


async def test_term_ignored_means_sigkill_after_the_grace(tmp_path: Path) -> None:
    path = script(
        tmp_path,
        """
        import signal, sys, time
        def on_term(signum, frame):
            sys.stderr.write("got TERM, ignoring it\\n")
            sys.stderr.flush()
        signal.signal(signal.SIGTERM, on_term)
        sys.stdout.write("ready\\n")
        sys.stdout.flush()
        time.sleep(30)
        time.sleep(30)
    """,
    )
    started = time.monotonic()
    result = await run(path, timeout_s=0.5, term_grace_s=0.5)
    elapsed = time.monotonic() - started
    assert result.timed_out
    assert "got TERM" in result.stderr  # TERM came first ...
    assert result.exit_code == -signal.SIGKILL  # ... then KILL
    assert 0.9 <= elapsed < 4, elapsed


async def test_deadline_kills_the_whole_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    path = script(
        tmp_path,
        f"""
        sleep 30 &
        echo $! > {pids}
        wait
    """,
        shell=True,
    )
    result = await run(path, timeout_s=0.5)
    assert result.timed_out
    child = int(pids.read_text())
    assert await wait_gone(child), f"grandchild {child} survived the deadline"


async def test_grandchild_holding_stdout_does_not_hold_the_runner(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    path = script(
        tmp_path,
        f"""
        import json, os, sys, time
        def spawn(new_session):
            pid = os.fork()
            if pid == 0:
                if new_session:
                    os.setsid()
                time.sleep(30)
                os._exit(0)
            return pid
        in_group, escaped = spawn(False), spawn(True)
        open({str(pids)!r}, "w").write(f"{{in_group}} {{escaped}}")
        json.dump({{"status": "ok", "result": "done"}}, sys.stdout)
    """,
    )
    started = time.monotonic()
    try:
        result = await run(path, timeout_s=20)
        elapsed = time.monotonic() - started
        in_group, _escaped = map(int, pids.read_text().split())
        assert not result.timed_out and result.exit_code == 0
        # the answer written before exiting is kept although the escaped child still holds the pipe
        assert orjson.loads(result.stdout) == {"status": "ok", "result": "done"}
        assert elapsed < 5, elapsed
        assert await wait_gone(in_group), "the grandchild in the plugin's group survived"
    finally:
        for pid in map(int, pids.read_text().split()) if pids.exists() else []:
            kill_quietly(pid)


async def test_stdout_is_capped_and_drained(tmp_path: Path) -> None:
    path = script(
        tmp_path,
        f"""
        import sys
        sys.stdout.buffer.write(b"y" * {supervision.STDOUT_CAP_BYTES + 5 * 65536})
    """,
    )
    result = await run(path)
    assert result.exit_code == 0  # drained: the plugin never blocked on a full pipe
    assert result.stdout_truncated and len(result.stdout) == supervision.STDOUT_CAP_BYTES


async def test_stderr_is_capped(tmp_path: Path) -> None:
    path = script(
        tmp_path,
        f"""
        import sys
        sys.stderr.write("e" * {supervision.STDERR_CAP_BYTES * 3})
        print('{{"status": "ok", "result": 1}}')
    """,
    )
    result = await run(path)
    assert result.exit_code == 0 and not result.stdout_truncated
    assert result.stderr.endswith(supervision.TRUNCATED_MARK)
    assert len(result.stderr) == supervision.STDERR_CAP_BYTES + len(supervision.TRUNCATED_MARK)


async def test_plugin_that_never_reads_stdin_does_not_block(tmp_path: Path) -> None:
    path = script(tmp_path, 'echo \'{"status": "ok", "result": 1}\'\n', shell=True)
    result = await run(path, b"x" * (4 * 1024 * 1024), timeout_s=5)
    assert not result.timed_out and result.exit_code == 0
    assert orjson.loads(result.stdout) == {"status": "ok", "result": 1}


async def test_exit_code_and_signal_are_reported(tmp_path: Path) -> None:
    assert (await run(script(tmp_path, "exit 78\n", shell=True, name="p78"))).exit_code == 78
    killed = await run(script(tmp_path, "kill -9 $$\n", shell=True, name="pkill"))
    assert killed.exit_code == -signal.SIGKILL and not killed.timed_out


async def test_cancel_stops_the_plugin(tmp_path: Path) -> None:
    path = script(tmp_path, "sleep 30\n", shell=True)
    cancel = asyncio.Event()
    asyncio.get_running_loop().call_later(0.2, cancel.set)
    started = time.monotonic()
    result = await run(path, timeout_s=20, cancel=cancel)
    assert result.cancelled and not result.timed_out
    assert time.monotonic() - started < 3


async def test_unstartable_plugin_is_a_spawn_error(tmp_path: Path) -> None:
    path = tmp_path / "not-executable"
    path.write_text("#!/bin/sh\necho hi\n")
    result = await run(path)
    assert result.spawn_error is not None and "cannot start" in result.spawn_error
    missing = await run(tmp_path / "missing")
    assert missing.spawn_error is not None


def test_plugin_user_resolution() -> None:
    import pwd

    from services.core import errors
    from services.runner import privileges

    try:
        nobody = pwd.getpwnam("headrace-plugin")  # the dedicated user wins where it exists
    except KeyError:
        nobody = pwd.getpwnam("nobody")
    assert privileges.resolve("nobody", euid=1000) is None  # not root: plugins run as the runner
    assert privileges.resolve("root", euid=0) is None and privileges.resolve("0", euid=0) is None
    assert privileges.resolve(None, euid=0) == privileges.PluginUser(
        nobody.pw_uid, nobody.pw_gid, nobody.pw_name, nobody.pw_dir
    )
    assert privileges.resolve("54321", euid=0) == privileges.PluginUser(54321, 54321, "54321", "/")
    with pytest.raises(errors.ConfigError, match="no such user"):
        privileges.resolve("no-such-user-x", euid=0)
    user = privileges.PluginUser(54321, 54321, "u", "/nonexistent")
    assert user.env({"PATH": "/bin", "HOME": "/root"}) == {
        "PATH": "/bin",
        "HOME": "/nonexistent",
        "USER": "u",
        "LOGNAME": "u",
    }

"""Subprocess supervision for protocol-2 plugins: own process group, minimal environment,
capped stdout/stderr, a deadline enforced by SIGTERM → grace → SIGKILL on the whole group.

Input: the executable, the request bytes, a deadline. Output: a `RawRun` — what the process
did, never an exception for anything the plugin does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

STDOUT_CAP_BYTES = 10 * 1024 * 1024
STDERR_CAP_BYTES = 64 * 1024
TERM_GRACE_S = 5.0
#: after the main process exits, how long stray children may hold the pipes open
PIPE_DRAIN_GRACE_S = 0.5
TRUNCATED_MARK = "\n…[truncated]"


@dataclasses.dataclass(frozen=True, slots=True)
class RawRun:
    stdout: bytes
    stderr: str
    exit_code: int | None
    timed_out: bool
    stdout_truncated: bool
    duration_ms: int
    #: set when the process could not be started at all
    spawn_error: str | None = None
    cancelled: bool = False


class _Capture:
    """What was read from one pipe so far: kept even when reading is abandoned midway."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.data = bytearray()
        self.truncated = False

    async def drain(self, stream: asyncio.StreamReader) -> None:
        """Read to EOF, keeping the first `cap` bytes and draining (not keeping) the rest."""
        while True:
            chunk = await stream.read(65536)
            if not chunk:
                break
            room = self.cap - len(self.data)
            if room > 0:
                self.data += chunk[:room]
            if len(chunk) > room:
                self.truncated = True


class _ExitAwareProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """Resolves `exited` the moment the process exits. `Process.wait()` on asyncio's own loop
    (before 3.12) also waits for every pipe to close, which a grandchild can delay forever."""

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self.exited: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


#: `setpriv --pdeathsig` makes the kernel SIGKILL the plugin when its runner dies (SIGKILL included),
#: so a crashed runner leaves no orphan finishing an attempt that is about to be retried
_SETPRIV = shutil.which("setpriv")


def _prefix(run_as: tuple[int, int] | None) -> tuple[str, ...]:
    """setpriv in front of the plugin: the uid drop (when asked), then the death signal, which setpriv
    sets after changing ids (a uid change clears it)."""
    if not _SETPRIV:
        return ()
    drop = (f"--reuid={run_as[0]}", f"--regid={run_as[1]}", "--clear-groups") if run_as else ()
    return (_SETPRIV, *drop, "--pdeathsig", "KILL", "--")


def _drop_without_setpriv(run_as: tuple[int, int] | None) -> dict[str, Any]:
    """Where there is no setpriv, the drop happens in the forked child (uvloop takes no user= argument)."""
    if not run_as or _SETPRIV:
        return {}
    uid, gid = run_as

    def drop() -> None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)

    return {"preexec_fn": drop}


async def run(
    executable: Path,
    request: bytes,
    *,
    timeout_s: float,
    env: dict[str, str],
    cwd: Path,
    cancel: asyncio.Event | None = None,
    term_grace_s: float = TERM_GRACE_S,
    run_as: tuple[int, int] | None = None,
) -> RawRun:
    """Run one plugin process to completion, deadline or cancellation; as (uid, gid) `run_as`, with
    no supplementary groups, when given (the runner is root)."""
    started = time.monotonic()
    loop = asyncio.get_running_loop()
    # checked here because with setpriv in front, a missing entrypoint would be setpriv's exit code, not an OSError
    if not os.access(executable, os.X_OK) or not executable.is_file():
        reason = "no such file" if not executable.exists() else "not an executable file (chmod +x?)"
        return RawRun(b"", "", None, False, False, 0, spawn_error=f"cannot start {executable}: {reason}")
    try:
        transport, protocol = await loop.subprocess_exec(
            lambda: _ExitAwareProtocol(2**16, loop),
            *_prefix(run_as),
            str(executable),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=str(cwd),
            env=env,
            start_new_session=True,  # its own process group: we signal the whole group
            **_drop_without_setpriv(run_as),
        )
    except OSError as exc:
        return RawRun(b"", "", None, False, False, 0, spawn_error=f"cannot start {executable}: {exc.strerror or exc}")
    proc = asyncio.subprocess.Process(transport, protocol, loop)
    pgid = proc.pid
    assert proc.stdin and proc.stdout and proc.stderr
    out, err = _Capture(STDOUT_CAP_BYTES), _Capture(STDERR_CAP_BYTES)
    stdout_task = asyncio.create_task(out.drain(proc.stdout))
    stderr_task = asyncio.create_task(err.drain(proc.stderr))

    async def feed() -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.write(request)
            await proc.stdin.drain()
        with contextlib.suppress(Exception):
            proc.stdin.close()

    feeder = asyncio.create_task(feed())
    timed_out = cancelled = False
    waiter = protocol.exited
    stoppers: set[asyncio.Future[Any]] = {waiter}
    cancel_task = asyncio.create_task(cancel.wait()) if cancel is not None else None
    if cancel_task is not None:
        stoppers.add(cancel_task)
    done, _ = await asyncio.wait(stoppers, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    if waiter not in done:
        if cancel_task is not None and cancel_task in done:
            cancelled = True
        else:
            timed_out = True
        _signal_group(pgid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout=term_grace_s)
        except TimeoutError:
            _signal_group(pgid, signal.SIGKILL)
            await waiter
    if cancel_task is not None:
        cancel_task.cancel()
    # Children that outlive the plugin may still hold the pipes: give them a moment, then end the group.
    readers = asyncio.gather(stdout_task, stderr_task)
    try:
        await asyncio.wait_for(asyncio.shield(readers), timeout=PIPE_DRAIN_GRACE_S)
    except TimeoutError:
        _signal_group(pgid, signal.SIGKILL)
        try:
            await asyncio.wait_for(readers, timeout=1.0)
        except TimeoutError:
            # A child left the group (setsid) and keeps the pipe open: stop listening to it,
            # keeping what the plugin wrote before it exited.
            stdout_task.cancel()
            stderr_task.cancel()
    else:
        _signal_group(pgid, signal.SIGKILL)  # reap any stray children still in the group
    transport.close()  # release the pipes even if an escaped child still holds their other end
    feeder.cancel()
    stderr_text = bytes(err.data).decode("utf-8", "replace")
    if err.truncated:
        stderr_text += TRUNCATED_MARK
    return RawRun(
        stdout=bytes(out.data),
        stderr=stderr_text,
        exit_code=proc.returncode,
        timed_out=timed_out,
        stdout_truncated=out.truncated,
        duration_ms=int((time.monotonic() - started) * 1000),
        cancelled=cancelled,
    )

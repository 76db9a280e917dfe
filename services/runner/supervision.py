"""Subprocess supervision for protocol-2 plugins: own process group, minimal environment,
capped stdout/stderr, a deadline enforced by SIGTERM → grace → SIGKILL on the whole group.

Input: the executable, the request bytes, a deadline. Output: a `RawRun` — what the process
did, never an exception for anything the plugin does.

The spawn is the cheapest one that keeps those rules: `subprocess.Popen` with nothing for the
child to run in Python, so CPython starts it with vfork (no copy of the runner's page tables,
none of its pages copied on write); the uid drop and the death signal are left to `setpriv`
exec'd in front. The three pipes are the process's own non-blocking fds watched by the event
loop, and the exit is a pidfd: no tasks, no stream objects, no child watcher thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

STDOUT_CAP_BYTES = 10 * 1024 * 1024
STDERR_CAP_BYTES = 64 * 1024
TERM_GRACE_S = 5.0
#: after the main process exits, how long stray children may hold the pipes open
PIPE_DRAIN_GRACE_S = 0.5
TRUNCATED_MARK = "\n…[truncated]"
_READ_BYTES = 1 << 20


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
    """One pipe read to EOF on the loop's readiness callbacks, keeping the first `cap` bytes and
    draining (not keeping) the rest; what was read is kept even when reading is abandoned midway."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, cap: int) -> None:
        self.loop, self.fd, self.cap = loop, fd, cap
        self.data = bytearray()
        self.truncated = False
        self.eof: asyncio.Future[None] = loop.create_future()
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        try:
            chunk = os.read(self.fd, _READ_BYTES)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self.close()
            return
        room = self.cap - len(self.data)
        if room > 0:
            self.data += chunk[:room] if len(chunk) > room else chunk
        if len(chunk) > room:
            self.truncated = True

    def close(self) -> None:
        if self.fd < 0:
            return
        self.loop.remove_reader(self.fd)
        os.close(self.fd)
        self.fd = -1
        if not self.eof.done():
            self.eof.set_result(None)


class _Feed:
    """The request written to the plugin's stdin as the pipe takes it, then stdin closed. A plugin
    that exits (or closes stdin) without reading it all just ends the feed."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, data: bytes) -> None:
        self.loop, self.fd = loop, fd
        self.rest = memoryview(data)
        self.watching = False
        os.set_blocking(fd, False)
        self._writable()
        if self.fd >= 0:
            loop.add_writer(fd, self._writable)
            self.watching = True

    def _writable(self) -> None:
        try:
            written = os.write(self.fd, self.rest)
        except BlockingIOError:
            return
        except OSError:  # EPIPE: the plugin closed its stdin
            self.close()
            return
        self.rest = self.rest[written:]
        if not self.rest:
            self.close()

    def close(self) -> None:
        if self.fd < 0:
            return
        if self.watching:
            self.loop.remove_writer(self.fd)
        os.close(self.fd)
        self.fd = -1
        self.rest.release()


class _Exit:
    """Resolves `code` (the returncode, -N for signal N) the moment the process exits, whoever
    still holds its pipes: a pidfd readable on the loop, else a thread blocked in wait()."""

    def __init__(self, loop: asyncio.AbstractEventLoop, proc: subprocess.Popen[bytes]) -> None:
        self.loop, self.proc = loop, proc
        self.code: asyncio.Future[int | None] = loop.create_future()
        try:
            self.pidfd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):  # not Linux ≥ 5.3
            self.pidfd = -1
            threading.Thread(target=self._wait_blocking, name=f"wait-{proc.pid}", daemon=True).start()
        else:
            loop.add_reader(self.pidfd, self._exited)

    def _exited(self) -> None:
        code = self.proc.poll()
        if code is None:
            return
        self.loop.remove_reader(self.pidfd)
        os.close(self.pidfd)
        if not self.code.done():
            self.code.set_result(code)

    def _wait_blocking(self) -> None:
        code = self.proc.wait()

        def settle() -> None:
            if not self.code.done():
                self.code.set_result(code)

        with contextlib.suppress(RuntimeError):  # the loop is closed
            self.loop.call_soon_threadsafe(settle)


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
    """Where there is no setpriv, the child drops the ids itself (CPython's C child code: no vfork then)."""
    if not run_as or _SETPRIV:
        return {}
    return {"user": run_as[0], "group": run_as[1], "extra_groups": []}


def _pipe() -> tuple[int, int]:
    return os.pipe2(os.O_CLOEXEC) if hasattr(os, "pipe2") else os.pipe()


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
    (in_r, in_w), (out_r, out_w), (err_r, err_w) = _pipe(), _pipe(), _pipe()
    try:
        # blocks the loop only until the exec, as any spawn does (uv_spawn waits for it too)
        proc = subprocess.Popen(  # noqa: ASYNC220
            (*_prefix(run_as), str(executable)),
            stdin=in_r,
            stdout=out_w,
            stderr=err_w,
            cwd=str(cwd),
            env=env,
            start_new_session=True,  # its own process group: we signal the whole group
            **_drop_without_setpriv(run_as),
        )
    except (OSError, subprocess.SubprocessError) as exc:
        for fd in (in_w, out_r, err_r):
            os.close(fd)
        cause = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        return RawRun(b"", "", None, False, False, 0, spawn_error=f"cannot start {executable}: {cause}")
    finally:
        for fd in (in_r, out_w, err_w):
            os.close(fd)
    pgid = proc.pid
    exit_ = _Exit(loop, proc)
    out, err = _Capture(loop, out_r, STDOUT_CAP_BYTES), _Capture(loop, err_r, STDERR_CAP_BYTES)
    feed = _Feed(loop, in_w, request)
    timed_out = cancelled = False
    cancel_task: asyncio.Task[Any] | None = None
    try:
        stoppers: set[asyncio.Future[Any]] = {exit_.code}
        if cancel is not None:
            cancel_task = asyncio.ensure_future(cancel.wait())
            stoppers.add(cancel_task)
        done, _ = await asyncio.wait(stoppers, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        if exit_.code not in done:
            if cancel_task is not None and cancel_task in done:
                cancelled = True
            else:
                timed_out = True
            _signal_group(pgid, signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(exit_.code), timeout=term_grace_s)
            except TimeoutError:
                _signal_group(pgid, signal.SIGKILL)
                await exit_.code
        # Children that outlive the plugin may still hold the pipes: give them a moment, then end the group.
        eofs = {out.eof, err.eof}
        if not (out.eof.done() and err.eof.done()):
            _, pending = await asyncio.wait(eofs, timeout=PIPE_DRAIN_GRACE_S)
            if pending:
                _signal_group(pgid, signal.SIGKILL)
                # a child that left the group (setsid) and keeps a pipe open is not waited for beyond this:
                # what the plugin wrote before it exited is kept
                await asyncio.wait(pending, timeout=1.0)
        _signal_group(pgid, signal.SIGKILL)  # reap any stray children still in the group
    except BaseException:
        _signal_group(pgid, signal.SIGKILL)  # abandoned (the attempt was cancelled): the plugin goes with it
        raise
    finally:
        if cancel_task is not None:
            cancel_task.cancel()
        feed.close()
        out.close()
        err.close()
    stderr_text = bytes(err.data).decode("utf-8", "replace")
    if err.truncated:
        stderr_text += TRUNCATED_MARK
    return RawRun(
        stdout=bytes(out.data),
        stderr=stderr_text,
        exit_code=exit_.code.result(),
        timed_out=timed_out,
        stdout_truncated=out.truncated,
        duration_ms=int((time.monotonic() - started) * 1000),
        cancelled=cancelled,
    )

"""`headrace up` as a child process for tests, in a process group of its own, with a teardown that leaves
none of its processes behind however it ends.

`up` starts nats-server (and, without a reachable Postgres, a private cluster) in a session of its own, so
killing `up`'s group alone would miss it; and once `up` has exited its children belong to init and can no
longer be found from it. So the descendants are recorded while `up` runs (each with its start time, so a
reused pid is never killed) and their groups are killed along with `up`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

#: how long `up` gets to print a line, and to exit after SIGINT, before its groups are SIGKILLed
GRACE_S = 30.0


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(ppid, state, start time in clock ticks) of a live process, None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
    return int(fields[1]), fields[0], int(fields[19])


def _descendants(root: int) -> dict[int, int]:
    """pid -> start time of every live descendant of `root`."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None:
            children.setdefault(st[0], []).append(int(entry))
            starts[int(entry)] = st[2]
    found: dict[int, int] = {}
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found[child] = starts[child]
                todo.append(child)
    return found


class UpProcess:
    """One `headrace up`; `await stop()` (in a finally) ends it and everything it started."""

    def __init__(self, argv: Sequence[str], *, env: dict[str, str], cwd: Path, stderr: Path | None = None) -> None:
        """`stderr`: a file to keep `up`'s logs and errors in (default: discarded)."""
        with open(stderr, "wb") if stderr is not None else contextlib.nullcontext(subprocess.DEVNULL) as err:
            self.proc = subprocess.Popen(
                list(argv),
                env=env,
                cwd=str(cwd),
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
            )
        self.known: dict[int, int] = {}

    def _record(self) -> None:
        if self.proc.poll() is None:
            self.known.update(_descendants(self.proc.pid))

    async def readline(self, timeout_s: float = GRACE_S) -> str:
        """The next line `up` prints; a silent `up` is killed after `timeout_s` and the test fails."""
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), timeout_s)
        except TimeoutError:
            self.kill()
            raise AssertionError(f"headrace up printed nothing for {timeout_s}s") from None
        self._record()
        return line.decode()

    async def stop(self, grace_s: float = GRACE_S) -> int | None:
        """SIGINT, as a user's Ctrl-C; up to `grace_s` for `up` to exit, then SIGKILL to every group it made
        (stragglers even after a clean exit). `up`'s exit code, None if it had to be killed."""
        self._record()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            code: int | None = await asyncio.to_thread(self.proc.wait, grace_s)
        except subprocess.TimeoutExpired:
            code = None
        self.kill()
        return code

    def kill(self) -> None:
        """SIGKILL `up`'s process group and the group of each process it started, and wait until they are gone."""
        self._record()
        own = os.getpgrp()
        groups = {self.proc.pid}
        victims = []
        for pid, start in self.known.items():
            st = _stat(pid)
            if st is None or st[2] != start:  # gone, or the pid now belongs to someone else
                continue
            victims.append(pid)
            with contextlib.suppress(ProcessLookupError):
                groups.add(os.getpgid(pid))
        for group in groups - {own}:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait()
        deadline = time.monotonic() + 10
        # orphans are reaped by init; a zombie holds no port or file any more
        while any((st := _stat(pid)) is not None and st[1] != "Z" and st[2] == self.known[pid] for pid in victims):
            if time.monotonic() > deadline:
                raise AssertionError(f"processes of headrace up survived SIGKILL: {victims}")
            time.sleep(0.05)

"""UpProcess leaves nothing behind: not a child that ignores SIGINT, nor one in a session of its own (as
`headrace up` starts nats-server), even after `up` itself has gone."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tests.support.upprocess import UpProcess

#: a stand-in for `headrace up`: starts a grandchild in its own session, prints its pid, ignores SIGINT
STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(600)"],
                         start_new_session=True)
print(child.pid, flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_a_stubborn_up_and_its_own_session_child_are_killed(tmp_path: Path) -> None:
    up = UpProcess([sys.executable, "-c", STUBBORN], env=dict(os.environ), cwd=tmp_path)
    try:
        child = int(await up.readline())
        assert alive(child) and os.getpgid(child) != up.proc.pid  # out of reach of a killpg of up's group
    finally:
        code = await up.stop(grace_s=1.0)
    assert code is None  # it ignored SIGINT: it had to be killed
    assert not alive(up.proc.pid) and not alive(child)


async def test_a_silent_up_is_killed_and_the_test_fails(tmp_path: Path) -> None:
    up = UpProcess([sys.executable, "-c", "import time; time.sleep(600)"], env=dict(os.environ), cwd=tmp_path)
    try:
        try:
            await up.readline(timeout_s=1.0)
        except AssertionError as exc:
            assert "printed nothing" in str(exc)
        else:
            raise AssertionError("readline returned from a silent process")
        assert up.proc.poll() is not None
    finally:
        await up.stop()

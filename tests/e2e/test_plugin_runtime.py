"""The protocol-2 runtime with real plugins (tests/plugins), driven through the HTTP API:
every way a plugin can answer, misbehave or die ends as the right job status and last_error,
and the runner keeps working afterwards."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from services.core import envelope, subjects
from tests.support.infra import wait_until
from tests.support.stack import Client, Stack

ONE_ATTEMPT = {"retry": {"max_attempts": 1}}
#: a permanent failure may end as `failed`, or `dead` once retries dead-letter an exhausted job
FAILED = frozenset({"failed", "dead"})

RUNTIME_PLUGINS: dict[str, Any] = {
    "sh_echo": {},
    "py_tool": {"config": {"greeting": "hello"}, "secrets": {"api_key": "s3cret"}, **ONE_ATTEMPT},
    "sleeper": {"timeouts": {"poll": "1s"}, **ONE_ATTEMPT},
    "garbage": ONE_ATTEMPT,
    "bigout": ONE_ATTEMPT,
    "stderr_exit1": ONE_ATTEMPT,
    "exit78": ONE_ATTEMPT,
    "selfkill": ONE_ATTEMPT,
    "forker": {"parallelism": 1, "timeouts": {"poll": "20s"}, **ONE_ATTEMPT},
    "emitter": {},
    "stateful": {"parallelism": 1},
}


@pytest.fixture
async def rt(make_config: Callable[..., Any], start_stack: Callable[..., Any]) -> Stack:
    return await start_stack(make_config(plugins=RUNTIME_PLUGINS))


@pytest.fixture
def client(rt: Stack) -> Client:
    assert rt.client is not None
    return rt.client


async def run_job(
    client: Client, plugin: str, command: str = "poll", payload: dict[str, Any] | None = None, timeout_s: float = 20.0
) -> dict[str, Any]:
    return await client.wait_job(await client.submit(plugin, command, payload), timeout_s=timeout_s)


async def job_events(s: Stack, job_id: str) -> list[envelope.Envelope]:
    assert s.api.bus is not None
    return [env for _, env in await s.api.bus.history(subjects.EVENTS, subjects.job_events(job_id))]


def alive(pid: int) -> bool:
    """False when `pid` is gone or a zombie nobody has reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(")")[2].split()[0] not in {"Z", "X"}


async def wait_dead(pid: int, what: str) -> None:
    async def dead() -> bool:
        return not alive(pid)

    await wait_until(dead, timeout_s=3, what=f"{what} (pid {pid}) to be gone")


# --- plugins that answer ------------------------------------------------------------------------


async def test_posix_shell_plugin(client: Client) -> None:
    job_id = await client.submit("sh_echo", "poll")
    done = await client.wait_job(job_id)
    assert done["status"] == "succeeded", done
    assert done["result"]["result"] == {"job_id": job_id, "command": "poll", "shell": "sh"}
    assert done["result"]["logs"] == [{"level": "info", "message": "sh_echo poll"}]
    assert done["attempt"] == 1 and done["last_error"] is None

    handled = await run_job(client, "sh_echo", "handle", {"x": 1})
    assert handled["status"] == "succeeded" and handled["result"]["result"]["command"] == "handle"


async def test_python_plugin_commands(client: Client) -> None:
    added = await run_job(client, "py_tool", "add", {"a": 2, "b": 40})
    assert added["status"] == "succeeded" and added["result"]["result"] == {"sum": 42}
    upper = await run_job(client, "py_tool", "upper", {"text": "loud"})
    assert upper["status"] == "succeeded" and upper["result"]["result"] == {"text": "LOUD"}

    failed = await run_job(client, "py_tool", "fail")
    assert failed["status"] in FAILED
    assert failed["last_error"] == "py_tool was asked to fail"
    assert failed["attempt"] == 1


async def test_plugin_reads_the_full_protocol_request(client: Client) -> None:
    job_id = await client.submit("py_tool", "whoami", {"q": [1, 2]})
    done = await client.wait_job(job_id)
    assert done["status"] == "succeeded", done
    req = done["result"]["result"]
    assert req["protocol"] == 2 and req["job_id"] == job_id and req["command"] == "whoami"
    assert req["config"] == {"greeting": "hello"}
    assert req["secret_keys"] == ["api_key"]  # secrets travel in the request, not the environment
    assert req["state"] == {} and req["payload"] == {"q": [1, 2]} and req["context"] == {}
    assert "event" not in req
    deadline = envelope.parse_time(req["deadline_at"])
    assert deadline > envelope.parse_time(done["started_at"])

    handled = await run_job(client, "py_tool", "handle", {"k": "v"})
    assert handled["status"] == "succeeded", handled
    assert handled["result"]["result"]["event"] == {"type": "api.trigger", "payload": {"k": "v"}}


async def test_plugin_environment_does_not_leak_the_gateways(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADRACE_SECRET_TEST", "leaked")
    done = await run_job(client, "py_tool", "env")
    assert done["status"] == "succeeded", done
    seen = done["result"]["result"]["env"]
    assert "PATH" in seen
    assert "HEADRACE_SECRET_TEST" not in seen and "NATS_URL" not in seen and "DATABASE_URL" not in seen


async def test_emitted_events_carry_their_dedupe_keys(rt: Stack, client: Client) -> None:
    job_id = await client.submit("emitter", "poll", {"tag": "abc", "count": 2})
    done = await client.wait_job(job_id)
    assert done["status"] == "succeeded", done
    events = done["result"]["events"]
    assert events == [
        {"type": "emitter.item", "payload": {"n": 0, "tag": "abc"}, "dedupe_key": "emitter-abc-0"},
        {"type": "emitter.item", "payload": {"n": 1, "tag": "abc"}, "dedupe_key": "emitter-abc-1"},
        {"type": "emitter.done", "payload": {"tag": "abc"}},
    ]
    assert rt.api.bus is not None
    emitted = [
        env.data for _, env in await rt.api.bus.history(subjects.EVENTS, subjects.plugin_event("emitter", "emitted"))
    ]
    assert [(e["type"], e["dedupe_key"]) for e in emitted if e.get("plugin") == "emitter"] == [
        ("emitter.item", "emitter-abc-0"),
        ("emitter.item", "emitter-abc-1"),
        ("emitter.done", None),
    ]


async def test_state_updates_reach_the_next_call(client: Client) -> None:
    counts = []
    for _ in range(3):
        done = await run_job(client, "stateful")
        assert done["status"] == "succeeded", done
        counts.append(done["result"]["result"]["count"])
    assert counts == [1, 2, 3]


# --- plugins that misbehave ---------------------------------------------------------------------


async def test_deadline_times_out_and_kills_the_process_group(client: Client, tmp_path: Path) -> None:
    pid_file = tmp_path / "sleeper.pids"
    done = await run_job(client, "sleeper", payload={"pid_file": str(pid_file)}, timeout_s=15)
    assert done["status"] in {"timed_out", "dead"}, done
    assert "deadline of 1s" in done["last_error"]
    assert done["attempt"] == 1
    shell_pid, sleep_pid = map(int, pid_file.read_text().split())
    await wait_dead(shell_pid, "the plugin")
    await wait_dead(sleep_pid, "the plugin's child in its process group")


async def test_non_json_stdout_fails(client: Client) -> None:
    done = await run_job(client, "garbage")
    assert done["status"] in FAILED, done
    assert "not JSON" in done["last_error"] and "definitely not JSON" in done["last_error"]


async def test_stdout_over_the_cap_fails_and_the_runner_survives(client: Client) -> None:
    done = await run_job(client, "bigout")
    assert done["status"] in FAILED, done
    assert "stdout exceeded 10485760 bytes" in done["last_error"]
    after = await run_job(client, "sh_echo")
    assert after["status"] == "succeeded"


async def test_stderr_and_exit_1_fail_with_the_stderr_text(client: Client) -> None:
    done = await run_job(client, "stderr_exit1")
    assert done["status"] in FAILED, done
    assert "exited 1" in done["last_error"]
    assert "fatal: the frobnicator is out of flux" in done["last_error"]


async def test_exit_78_is_a_permanent_failure(rt: Stack, client: Client) -> None:
    job_id = await client.submit("exit78", "poll")
    done = await client.wait_job(job_id)
    assert done["status"] in FAILED, done
    assert done["attempt"] == 1
    assert "78" in done["last_error"] and "bad configuration, giving up" in done["last_error"]
    failed = [env for env in await job_events(rt, job_id) if env.type == "job.failed"]
    assert len(failed) == 1 and failed[0].data["retry"] is False and failed[0].data["exit_code"] == 78


async def test_plugin_killed_by_a_signal_fails(client: Client) -> None:
    done = await run_job(client, "selfkill")
    assert done["status"] in FAILED, done
    assert "killed by signal 9" in done["last_error"]


async def test_grandchildren_holding_stdout_do_not_hold_the_job(client: Client, tmp_path: Path) -> None:
    pid_file = tmp_path / "forker.pids"
    try:
        done = await run_job(client, "forker", payload={"pid_file": str(pid_file)})
        assert done["status"] == "succeeded", done
        plugin_pid, in_group, escaped = map(int, pid_file.read_text().split())
        assert done["result"]["result"] == {"children": [in_group, escaped]}
        took = envelope.parse_time(done["completed_at"]) - envelope.parse_time(done["started_at"])
        assert took.total_seconds() < 5, took  # its deadline is 20 s; the children sleep 30 s
        await wait_dead(plugin_pid, "the plugin")
        await wait_dead(in_group, "the grandchild in the plugin's process group")
        # the runner is free again: the next forker job (parallelism 1) runs at once
        again = await run_job(client, "forker", payload={"pid_file": str(tmp_path / "again.pids")})
        assert again["status"] == "succeeded", again
    finally:
        for path in (pid_file, tmp_path / "again.pids"):
            # the setsid grandchild left the group on purpose: no supervisor can reach it
            for pid in map(int, path.read_text().split()[1:]) if path.exists() else []:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


# --- the lease ----------------------------------------------------------------------------------


async def test_plugin_running_past_ack_wait_is_not_redelivered(make_config: Callable[..., Any]) -> None:
    config = make_config(plugins={"sleeper": {"parallelism": 2, "timeouts": {"poll": "20s"}, **ONE_ATTEMPT}})
    s = Stack(config)
    s.runner.ack_wait_s = 2.0  # without heartbeats the 5 s plugin would lose its lease twice
    try:
        await s.start()
        assert s.client is not None
        job_id = await s.client.submit("sleeper", "poll", {"seconds": 5})
        done = await s.client.wait_job(job_id, timeout_s=20)
        assert done["status"] == "succeeded", done
        assert done["attempt"] == 1
        started = [env for env in await job_events(s, job_id) if env.type == "job.started"]
        assert len(started) == 1, [env.data for env in started]
    finally:
        await s.stop()

"""The operator verbs through the real CLI against a real stack: `headrace jobs ls|show|retry|cancel`,
`tail`, `doctor`, `plugin new` (-> check-config -> a job of the new plugin), `--version`, and how
the URL and token are found (flags, HEADRACE_URL/HEADRACE_TOKEN, the state directory `up` writes).

Most calls run `services.cli.main([...])` in a thread with stdout/stderr captured; the ones about
the environment, signals or `headrace up` run `python -m services.cli` as a child process. One
stack (with its own nats-server) serves the whole module."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import os
import re
import signal
import stat
import sys
import threading
from collections.abc import AsyncIterator
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

import orjson
import pytest
import yaml

from services import cli
from services.cli_client import connection
from services.core import config as config_mod
from services.core import embedded
from tests.support import infra, stack
from tests.support.infra import wait_until
from tests.support.upprocess import UpProcess

ADMIN = stack.ADMIN
PIPELINES = [{"name": "pair", "steps": [{"id": "first", "uses": "echo_py"}, {"id": "second", "uses": "echo_py"}]}]
PLUGINS = {
    "echo": {"parallelism": 2},
    "echo_py": {"parallelism": 2},
    "exit78": {"retry": {"max_attempts": 1}},
    "sleeper": {"timeouts": {"poll": "60s"}, "retry": {"max_attempts": 1}},
}
#: how long a child `headrace` gets to print a line or to exit
CHILD_TIMEOUT_S = 30.0


@dataclasses.dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return orjson.loads(self.out)

    def one_line_error(self) -> str:
        """The single `headrace: error: ...` line a failing verb prints (no traceback)."""
        assert self.code == 1, self
        assert self.out == "" and "Traceback" not in self.err, self
        lines = self.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("headrace: error: "), self
        return lines[0].removeprefix("headrace: error: ")


class _ThisThread(io.TextIOBase):
    """Stands in for sys.stdout or sys.stderr: what the CLI's thread writes goes to its buffer, what any
    other thread writes (the stack's log lines, from the event loop) where it went before."""

    def __init__(self, fallback: TextIO, buffer: io.StringIO) -> None:
        self.fallback = fallback
        self.buffer = buffer
        self.thread = threading.get_ident()

    def _target(self) -> TextIO:
        return self.buffer if threading.get_ident() == self.thread else self.fallback

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        self._target().flush()

    def isatty(self) -> bool:
        return self._target().isatty()


def _main(argv: list[str]) -> Run:
    out, err = io.StringIO(), io.StringIO()
    with (
        contextlib.redirect_stdout(_ThisThread(sys.stdout, out)),
        contextlib.redirect_stderr(_ThisThread(sys.stderr, err)),
    ):
        code = cli.main(argv)
    return Run(code, out.getvalue(), err.getvalue())


async def headrace(*argv: str) -> Run:
    """`headrace ARGV` in this process (its own event loop, in a thread)."""
    return await asyncio.to_thread(_main, list(argv))


def _child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADRACE_")}
    return {**env, "PYTHONPATH": str(stack.REPO), **(extra or {})}


async def spawn(*argv: str, cwd: Path, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        *argv,
        cwd=str(cwd),
        env=_child_env(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def child(*argv: str, cwd: Path, env: dict[str, str] | None = None) -> Run:
    """`python -m services.cli ARGV` as a child process, to its end."""
    proc = await spawn(*argv, cwd=cwd, env=env)
    out, err = await asyncio.wait_for(proc.communicate(), CHILD_TIMEOUT_S)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


@pytest.fixture(scope="module")
async def hr(tmp_path_factory: pytest.TempPathFactory, postgres: infra.Postgres) -> AsyncIterator[stack.Stack]:
    """One stack for the module, on a nats-server of its own (other tests' resets never reach it)."""
    nats = infra.NatsServer(tmp_path_factory.mktemp("cli-nats"))
    await nats.start()
    doc = stack.config_doc(plugins=PLUGINS, pipelines=PIPELINES)
    config = stack.write_config(
        tmp_path_factory.mktemp("cli-config") / "config.yaml",
        doc,
        nats_url=nats.url,
        database_url=await postgres.new_database(),
    )
    s = await stack.Stack(config).start()
    try:
        yield s
    finally:
        await s.stop()
        await nats.stop()


@pytest.fixture
def client(hr: stack.Stack) -> stack.Client:
    assert hr.client is not None
    return hr.client


def at(hr: stack.Stack) -> list[str]:
    return ["--url", hr.url, "--token", ADMIN]


async def test_version() -> None:
    run = await child("--version", cwd=stack.REPO)
    assert run.code == 0 and run.out == f"headrace {metadata.version('headrace')}\n", run


async def test_jobs_ls_table_and_json(hr: stack.Stack, client: stack.Client) -> None:
    marker = "lsmarker" + os.urandom(4).hex()
    ids = [await client.submit("echo", "poll", {"message": f"{marker} {i}"}) for i in range(3)]
    for job_id in ids:
        await client.wait_job(job_id)
    await hr.caught_up()

    run = await headrace("jobs", "ls", "--plugin", "echo", "--limit", "2", *at(hr))
    assert run.code == 0, run
    assert "\x1b[" not in run.out  # not a terminal: no colour
    header, *rows, footer = run.out.strip().splitlines()
    assert header.split() == ["JOB", "ID", "PLUGIN", "COMMAND", "STATUS", "ATTEMPT", "CREATED", "DURATION"]
    status, api = await client.get("/jobs?plugin=echo&limit=2")
    assert status == 200
    assert [row.split()[0] for row in rows] == [j["job_id"] for j in api["jobs"]] == ids[:0:-1]
    assert all(row.split()[1:5] == ["echo", "poll", "succeeded", "1"] for row in rows)
    assert footer == f"2 of {api['total']} jobs"

    run = await headrace("jobs", "ls", "--plugin", "echo", "--limit", "2", "--json", *at(hr))
    assert run.code == 0 and run.json() == api, run

    run = await headrace("jobs", "ls", "--status", "ok", "--command", "poll", "--json", *at(hr))
    assert run.code == 0 and run.json()["jobs"], run
    assert {(j["status"], j["command"]) for j in run.json()["jobs"]} == {("succeeded", "poll")}

    # --query searches the attempts (GET /job-logs): exactly the one job whose result holds it
    run = await headrace("jobs", "ls", "--query", f"{marker} 1", *at(hr))
    assert run.code == 0, run
    header, *rows, footer = run.out.strip().splitlines()
    assert "COMPLETED" in header and "ERROR" in header
    assert [row.split()[0] for row in rows] == [ids[1]] and footer == "1 of 1 attempts"
    run = await headrace("jobs", "ls", "--query", marker, "--json", *at(hr))
    assert run.code == 0 and {log["job_id"] for log in run.json()["logs"]} == set(ids), run

    run = await headrace("jobs", "ls", "--plugin", "no-such-plugin", *at(hr))
    assert run.code == 0 and run.out.strip() == "no jobs match", run
    assert "status" in (await headrace("jobs", "ls", "--status", "bogus", *at(hr))).one_line_error()


async def test_jobs_show_a_job_and_a_pipeline(hr: stack.Stack, client: stack.Client) -> None:
    job_id = await client.submit("echo", "poll", {"message": "show me"})
    await client.wait_job(job_id)
    await hr.caught_up()
    run = await headrace("jobs", "show", job_id, *at(hr))
    assert run.code == 0, run
    lines = run.out.splitlines()
    assert lines[0].split() == ["job", job_id, "succeeded"]
    assert re.search(r"plugin\s+echo / poll", run.out) and re.search(r"submitted by\s+api, attempt 1", run.out)
    assert '"result": "Echoed: show me"' in run.out  # the result, as JSON
    assert "attempts" in lines and "logs" in lines
    assert "#1 info  Echoed: show me" in run.out
    assert "pipeline" not in lines  # a lone job has no tree

    run = await headrace("jobs", "show", job_id, "--json", *at(hr))
    assert run.code == 0, run
    shown = run.json()
    assert shown["job"] == (await client.get(f"/job/{job_id}"))[1]
    assert [(a["attempt"], a["status"]) for a in shown["attempts"]] == [(1, "succeeded")]
    assert shown["tree"] == (await client.get(f"/job/{job_id}/tree"))[1]

    status, body = await client.post("/pipeline/pair", json={"payload": {"n": 1}})
    assert status == 202, body
    root = body["job_id"]

    async def projected() -> Any:
        _, tree = await client.get(f"/job/{root}/tree")
        return tree if len(tree) == 3 and all(n["status"] == "succeeded" for n in tree) else None

    tree = await wait_until(projected, timeout_s=20, what="the pipeline's tree")
    run = await headrace("jobs", "show", root, *at(hr))
    assert run.code == 0, run
    lines = run.out.splitlines()
    assert lines[0].split() == ["job", root, "succeeded"]
    below = lines[lines.index("pipeline") + 1 :]
    assert len(below) == 3 and "pipeline/pair" in below[0] and root in below[0]
    for node, line in zip(tree[1:], below[1:], strict=True):
        assert node["step_id"] in line and node["job_id"] in line and "echo_py/handle" in line
    assert below[1].index("first") < below[2].index("second")  # second is first's child: indented deeper

    missing = await headrace("jobs", "show", "no-such-job", *at(hr))
    assert missing.one_line_error() == "404: job 'no-such-job' not found"


async def test_jobs_retry_a_dead_job(hr: stack.Stack, client: stack.Client) -> None:
    dead = await client.submit("exit78", "poll")
    assert (await client.wait_job(dead))["status"] == "dead"
    run = await headrace("jobs", "retry", dead, *at(hr))
    assert run.code == 0, run
    found = re.fullmatch(rf"{dead} retried as (\S+) \(exit78/poll, queued\)\n", run.out)
    assert found, run
    again = found.group(1)
    assert again != dead and (await client.wait_job(again))["status"] == "dead"
    await hr.caught_up()
    shown = (await headrace("jobs", "show", again, "--json", *at(hr))).json()
    assert shown["job"]["submitted_by"] == "retry"

    run = await headrace("jobs", "retry", dead, "--json", *at(hr))
    assert run.code == 0, run
    body = run.json()
    assert body["retry_of"] == dead and body["status"] == "queued" and body["plugin"] == "exit78"
    await client.wait_job(body["job_id"])

    ok = await client.submit("echo", "poll", {"message": "fine"})
    await client.wait_job(ok)
    error = (await headrace("jobs", "retry", ok, *at(hr))).one_line_error()
    assert error.startswith(f"409: job {ok} is succeeded; only jobs that ended without success"), error


async def test_jobs_cancel(hr: stack.Stack, client: stack.Client) -> None:
    job_id = await client.submit("sleeper", "poll", {"seconds": 30})
    await client.wait_job(job_id, {"running"})
    run = await headrace("jobs", "cancel", job_id, *at(hr))
    assert run.code == 0 and run.out == f"{job_id} cancelling (was running)\n", run
    assert (await client.wait_job(job_id, timeout_s=20))["status"] == "cancelled"
    error = (await headrace("jobs", "cancel", job_id, *at(hr))).one_line_error()
    assert error == f"409: job {job_id} is already cancelled"

    second = await client.submit("sleeper", "poll", {"seconds": 30})
    await client.wait_job(second, {"running"})
    run = await headrace("jobs", "cancel", second, "--json", *at(hr))
    assert run.code == 0 and run.json() == {"job_id": second, "status": "cancelling", "previous_status": "running"}
    await client.wait_job(second, timeout_s=20)


async def _line(stream: asyncio.StreamReader | None) -> str:
    assert stream is not None
    raw = await asyncio.wait_for(stream.readline(), CHILD_TIMEOUT_S)
    assert raw, "the child closed its output"
    return raw.decode()


async def _interrupt(proc: asyncio.subprocess.Process) -> Run:
    """Ctrl-C, as a user would; the rest of its output and its exit code."""
    proc.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(proc.communicate(), CHILD_TIMEOUT_S)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


async def test_tail_follows_the_live_stream_until_ctrl_c(hr: stack.Stack, client: stack.Client, tmp_path: Path) -> None:
    proc = await spawn("tail", *at(hr), cwd=tmp_path)
    try:
        assert (await _line(proc.stderr)).startswith(f"following {hr.url}/events")
        job_id = await client.submit("echo", "poll", {"message": "tail me"})
        mine: list[str] = []
        while not mine or "job.succeeded" not in mine[-1]:
            line = await _line(proc.stdout)
            if job_id in line:
                mine.append(line)
    finally:
        stopped = await _interrupt(proc)
    assert stopped.code == 0 and "Traceback" not in stopped.err, stopped
    types = [line.split()[2] for line in mine if line.split()[2] != "job.log"]
    assert types == ["job.queued", "job.started", "job.succeeded"], mine
    seq, kind, shown_id, *rest = mine[-1].split()[1:]
    assert seq.isdigit() and kind == "job.succeeded" and shown_id == job_id
    assert {"plugin=echo", "command=poll", "attempt=1"} <= set(rest)

    # resume from the start of the log, one job, one type, as JSON lines
    proc = await spawn(
        "tail", "--after", "0", "--job", job_id, "--type", "job.succeeded", "--json", *at(hr), cwd=tmp_path
    )
    try:
        await _line(proc.stderr)
        event = orjson.loads(await _line(proc.stdout))
    finally:
        stopped = await _interrupt(proc)
    assert stopped.code == 0 and stopped.out == "", stopped  # nothing but that one event
    assert event["event"] == "job.succeeded" and event["id"] == seq
    assert event["data"]["job_id"] == job_id and event["data"]["data"]["plugin"] == "echo"

    bad = await headrace("tail", "--job", "bad.id", *at(hr))
    assert bad.one_line_error() == "400: query parameter 'job_id' is not a valid job id"


async def test_doctor_on_a_healthy_stack(hr: stack.Stack, client: stack.Client) -> None:
    status, selfcheck = await client.get("/system/selfcheck")
    assert status == 200
    consumers = {c["name"]: c for c in selfcheck["consumers"]}
    assert consumers["projector"]["stream"] == "EVENTS" and consumers["projector"]["pending"] >= 0
    assert {"dispatcher-commands", "dispatcher-outcomes", "runner-echo", "runner-sleeper"} <= set(consumers)
    assert all(isinstance(c["pending"], int) for c in consumers.values())

    run = await headrace("doctor", *at(hr))
    assert run.code == 0, run
    marks = {}
    for line in run.out.splitlines():
        parts = line.split(maxsplit=2)
        if len(parts) == 3 and parts[0] in ("ok", "warn", "fail"):
            marks.setdefault(parts[1], []).append(parts[0])
    for name in ("api", "nats", "postgres", "runners", "plugins", "dispatcher", "projector", "config", "lag"):
        assert "ok" in marks.get(name, []), (name, run.out)
    assert re.search(
        rf"^ok\s+dispatcher\s+active: {re.escape(hr.dispatcher.source)} since .*; 0 standbys$", run.out, re.M
    )
    assert not any("fail" in m for m in marks.values()), run.out
    _, queue = await client.get("/analytics/queue")
    assert marks["queue"] == ["warn" if queue["dead_count"] else "ok"], run.out  # dead letters are a warning
    assert re.search(r"^CONSUMER\s+STREAM\s+PENDING\s+IN FLIGHT\s+REDELIVERED$", run.out, re.M)
    assert re.search(r"^runner-echo\s+WORK\s+\d+\s+\d+\s+\d+$", run.out, re.M)
    assert "0 failure(s)" in run.out

    run = await headrace("doctor", "--json", *at(hr))
    assert run.code == 0, run
    report = run.json()
    assert report["ok"] is True and report["healthz"]["status"] == "ok"
    assert {c["name"] for c in report["checks"]} >= {"api", "nats", "postgres", "runners", "plugins", "config", "lag"}
    assert {c["name"] for c in report["selfcheck"]["consumers"]} >= {"projector", "runner-echo"}
    leaders = report["selfcheck"]["leaders"]
    assert leaders["dispatcher"]["holder"] == hr.dispatcher.source and leaders["dispatcher"]["held"] is True
    assert leaders["projector"]["holder"] == hr.projector.source and leaders["projector"]["standbys"] == 0

    # without a token: the open /healthz is read, the rest is "not checked" (a warning, not a failure)
    run = await headrace("doctor", "--url", hr.url, "--state-dir", "/nonexistent")
    assert run.code == 0 and re.search(r"^warn\s+selfcheck\s+not checked: 401", run.out, re.M), run
    # a refused token is a failure
    run = await headrace("doctor", "--url", hr.url, "--token", "wrong-token-000")
    assert run.code == 1 and re.search(r"^fail\s+selfcheck\s+401 unauthorized", run.out, re.M), run


async def test_doctor_warns_when_no_dispatcher_leads(make_config: Any) -> None:
    """Without an active dispatcher nothing is decided: a warning (not a failure: one may be taking over)."""
    from services.api.service import Api
    from services.projector.service import Projector
    from services.runner.service import Runner

    config = make_config()
    services = [Projector(config), Runner(config), Api(config, port=0)]
    for service in services:
        await service.start()
    try:
        api = services[-1]
        assert isinstance(api, Api)
        run = await headrace("doctor", "--url", api.url, "--token", ADMIN)
        assert run.code == 0, run
        assert re.search(r"^warn\s+dispatcher\s+no active dispatcher: no job is decided", run.out, re.M), run.out
        assert re.search(r"^ok\s+projector\s+active: projector/", run.out, re.M), run.out
    finally:
        for service in reversed(services):
            await service.stop()


async def test_an_unreachable_api_is_one_line_and_a_doctor_failure() -> None:
    url = f"http://127.0.0.1:{embedded.free_port()}"
    error = (await headrace("jobs", "ls", "--url", url, "--token", ADMIN)).one_line_error()
    assert error == f"cannot reach the API at {url} (from --url): Connection refused"
    run = await headrace("doctor", "--url", url)
    assert run.code == 1, run
    assert re.match(rf"fail\s+api\s+cannot reach the API at {url}", run.out), run
    run = await headrace("doctor", "--url", url, "--json")
    assert run.code == 1 and run.json()["ok"] is False and run.json()["checks"][0]["mark"] == "fail"


async def test_doctor_fails_when_nats_is_down(tmp_path: Path, database_url: str) -> None:
    nats = infra.NatsServer(tmp_path / "own-nats")
    await nats.start()
    config = stack.write_config(tmp_path / "c.yaml", stack.config_doc(), nats_url=nats.url, database_url=database_url)
    s = await stack.Stack(config).start()
    try:
        assert s.client is not None
        assert (await headrace("doctor", "--url", s.url, "--token", ADMIN)).code == 0
        await nats.kill()

        async def degraded() -> bool:
            status, _ = await s.client.get("/healthz", token=None)  # type: ignore[union-attr]
            return status == 503

        await wait_until(degraded, timeout_s=10, what="healthz 503")
        run = await headrace("doctor", "--url", s.url, "--token", ADMIN)
        assert run.code == 1, run
        assert re.search(r"^fail\s+nats\s", run.out, re.M) and re.search(r"^ok\s+postgres\s", run.out, re.M), run
        assert re.search(r"^warn\s+queue\s+not checked: NATS is unavailable", run.out, re.M), run

        # NATS back: healthy again (and the stack stops without waiting out NATS timeouts)
        await nats.restart()

        async def healthy() -> bool:
            return (await headrace("doctor", "--url", s.url, "--token", ADMIN)).code == 0

        await wait_until(healthy, timeout_s=30, interval_s=0.2, what="doctor to pass again")
    finally:
        await s.stop()
        await nats.stop()


async def test_plugin_new_passes_check_config_and_runs_a_job(tmp_path: Path, nats_url: str, database_url: str) -> None:
    root = tmp_path / "plugins"
    run = await headrace("plugin", "new", "hello", "--dir", str(root))
    assert run.code == 0, run
    manifest, entrypoint = root / "hello" / "manifest.yaml", root / "hello" / "run.py"
    assert f"wrote {manifest}" in run.out and f"wrote {entrypoint}" in run.out and "hello: {enabled: true}" in run.out
    assert entrypoint.stat().st_mode & stat.S_IXOTH and manifest.stat().st_mode & stat.S_IROTH
    assert yaml.safe_load(manifest.read_text())["protocol"] == 2

    doc = stack.config_doc(plugins={"hello": {"enabled": True}}, plugin_roots=[str(root)])
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(doc))
    check = await headrace("-c", str(path), "check-config")
    assert check.code == 0 and check.out == f"{path}: ok (1 plugins configured)\n" and check.err == "", check
    loaded = config_mod.load(path)
    assert set(loaded.catalog.plugins) == {"hello"} and not loaded.catalog.errors

    config = stack.write_config(path, doc, nats_url=nats_url, database_url=database_url)
    s = await stack.Stack(config).start()
    try:
        assert s.client is not None
        polled = await s.client.wait_job(await s.client.submit("hello", "poll", {"message": "hi"}))
        assert polled["status"] == "succeeded" and polled["result"]["result"] == "hello: hi", polled
        status, body = await s.client.post("/plugin/hello/handle", json={"payload": {"k": 1}})
        assert status == 202, body
        handled = await s.client.wait_job(body["job_id"])
        assert handled["status"] == "succeeded" and handled["result"]["events"] == [
            {"type": "hello.handled", "payload": {"k": 1}}
        ], handled
        status, body = await s.client.post("/plugin/hello/health?wait=10s", json={})
        assert status == 200 and body["status"] == "succeeded" and body["result"]["result"] == {"healthy": True}
    finally:
        await s.stop()

    assert "already exists" in (await headrace("plugin", "new", "hello", "--dir", str(root))).one_line_error()
    assert "plugin name" in (await headrace("plugin", "new", "bad.name", "--dir", str(root))).one_line_error()


async def test_url_and_token_from_the_environment_and_the_state_dir(hr: stack.Stack, tmp_path: Path) -> None:
    env = {"HEADRACE_URL": hr.url, "HEADRACE_TOKEN": ADMIN}
    run = await child("jobs", "ls", "--json", "--limit", "1", cwd=tmp_path, env=env)
    assert run.code == 0 and "jobs" in run.json(), run
    # flags win over the environment
    run = await child("jobs", "ls", "--json", "--url", hr.url, cwd=tmp_path, env={**env, "HEADRACE_URL": "http://x"})
    assert run.code == 0, run
    error = (await child("jobs", "ls", cwd=tmp_path, env={**env, "HEADRACE_TOKEN": "wrong-token-000"})).one_line_error()
    assert error.startswith("401 unauthorized: ") and "(token: HEADRACE_TOKEN;" in error, error
    # no token anywhere: the 401 says where it looked
    error = (await child("jobs", "ls", cwd=tmp_path, env={"HEADRACE_URL": hr.url})).one_line_error()
    assert "token: none; no HEADRACE_TOKEN and no .state/admin.token" in error, error

    # a state directory (as `headrace up` writes it): HEADRACE_STATE_DIR, then --state-dir
    state = tmp_path / "somewhere"
    state.mkdir()
    (state / "api.url").write_text(hr.url + "\n")
    (state / "admin.token").write_text(ADMIN + "\n")
    run = await child("jobs", "ls", "--json", cwd=tmp_path, env={"HEADRACE_STATE_DIR": str(state)})
    assert run.code == 0 and "jobs" in run.json(), run
    run = await child("doctor", "--state-dir", str(state), cwd=tmp_path, env={"HEADRACE_STATE_DIR": "/nonexistent"})
    assert run.code == 0 and "fail" not in run.out.split(), run


def test_nothing_named_means_the_default_url_and_no_token(tmp_path: Path) -> None:
    target = connection.resolve(url=None, token=None, state=None, env={})
    assert target == connection.Target(
        "http://127.0.0.1:8080",
        "the default; no .state/api.url",
        None,
        "none; no HEADRACE_TOKEN and no .state/admin.token",
    )
    (tmp_path / "api.url").write_text("http://127.0.0.1:1234/\n")
    target = connection.resolve(url=None, token="t", state=None, env={"HEADRACE_STATE_DIR": str(tmp_path)})
    assert (target.url, target.url_source) == ("http://127.0.0.1:1234", str(tmp_path / "api.url"))
    assert (target.token, target.token_source) == ("t", "--token")


async def test_up_writes_its_url_where_the_verbs_find_it(tmp_path: Path, postgres: infra.Postgres) -> None:
    """`headrace up` with the default state directory (./.state), then the verbs with no flag and no
    environment from the same directory."""
    env = _child_env({"DATABASE_URL": await postgres.new_database()})
    config = str(stack.REPO / "config.example.yaml")
    argv = [sys.executable, "-m", "services.cli", "-c", config, "up", "--port", "0"]
    up = UpProcess(argv, env=env, cwd=tmp_path)
    try:
        line = (await up.readline()).strip().removeprefix("Headrace is up: ")
        url, _, database = line.partition(" ")
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url) and database.startswith("(database "), line
        assert (tmp_path / ".state" / "api.url").read_text().strip() == url
        run = await child("jobs", "ls", "--json", cwd=tmp_path)
        assert run.code == 0 and run.json()["jobs"] == [], run
        run = await child("doctor", cwd=tmp_path)
        assert run.code == 0 and re.search(rf"^ok\s+api\s+{url} answers", run.out, re.M), run
    finally:
        assert await up.stop() == 0

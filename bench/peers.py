"""`python -m bench --peers`: Celery and Dramatiq measured against Headrace in the same run.

The peers are installed from `bench/peers-requirements.txt` into their own venv (never
Headrace's) and run on private loopback Redis servers the harness starts and stops: one
without persistence (`--save '' --appendonly no`) and one durable (`--appendonly yes
--appendfsync always`). Every comparison alternates Headrace and the peer in ABBA segments;
see the "Peers" section of bench/README.md for what each row measures and how.

The pure parts (the ABBA schedule, goal evaluation, the JSON rows) are at the top; the
measurements drive `bench.main.Bench`'s stack and load generator.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import asyncpg
import nats
import orjson
from nats.js import api

from bench import infra
from services.core import embedded

if TYPE_CHECKING:
    from bench.main import Bench

REQUIREMENTS = infra.REPO / "bench" / "peers-requirements.txt"
DEFAULT_VENV = Path.home() / ".cache" / "headrace-bench" / "peers-venv"
#: segment pairs per ABBA comparison (A B B A = 2 pairs)
PAIRS = 2
LATENCY_ROUNDS = 4
LATENCY_PER_ROUND = 50
E2E_GOAL = 1.0
E2E_2M_GOAL = 1.5
DIRECT_GOAL = 0.7
P50_GOAL = 3.0
P99_GOAL = 5.0
POLL_S = 0.002


# --- pure parts --------------------------------------------------------------------------------


def abba(pairs: int, a: str = "headrace", b: str = "peer") -> list[str]:
    """A B B A A B … : `pairs` pairs, each side first in every other pair, so drift falls on both alike."""
    return [k for i in range(pairs) for k in ((a, b) if i % 2 == 0 else (b, a))]


def met(ratio: float | None, goal: float | None, lower_better: bool = False) -> bool | None:
    """Whether `ratio` meets `goal` (≥ goal, or ≤ goal for a latency ratio); None without both."""
    if ratio is None or goal is None:
        return None
    return ratio <= goal if lower_better else ratio >= goal


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def json_row(
    name: str,
    headrace: float | None,
    baseline: float | None,
    ratio: float | None,
    goal: float | None,
    *,
    lower_better: bool = False,
    unit: str = "",
) -> dict[str, Any]:
    """One row of `--json`: {"row", "headrace", "baseline", "ratio", "goal", "met"} (+ "unit",
    and "goal_is" saying whether the ratio must be at least or at most the goal)."""
    return {
        "row": name,
        "headrace": headrace,
        "baseline": baseline,
        "ratio": ratio,
        "goal": goal,
        "met": met(ratio, goal, lower_better),
        "unit": unit,
        "goal_is": "max" if lower_better else "min",
    }


def requirements_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- processes -----------------------------------------------------------------------------------


def group_cpu_seconds(pgids: dict[int, str]) -> dict[str, float]:
    """User + system CPU seconds of every live process in these process groups, by the groups' names
    (a prefork pool's children included: /proc/<pid>/stat of a single pid would miss them)."""
    ticks: dict[str, int] = dict.fromkeys(pgids.values(), 0)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        # after the command: state(0) ppid(1) pgrp(2) … utime(11) stime(12)
        name = pgids.get(int(fields[2]))
        if name is not None:
            ticks[name] += int(fields[11]) + int(fields[12])
    return {name: n / infra._TICK for name, n in ticks.items()}


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before.get(name, 0.0) for name in after}


async def ensure_venv(venv: Path, say: Any) -> Path:
    """The peers venv's python, creating the venv and installing the pinned requirements when missing
    or when the requirements file changed since (a marker in the venv holds its digest)."""
    text = REQUIREMENTS.read_text()
    marker = venv / ".headrace-bench-requirements"
    python = venv / "bin" / "python"
    if python.exists() and marker.exists() and marker.read_text() == requirements_digest(text):
        return python
    say(f"peers: installing {REQUIREMENTS.name} into {venv}")
    venv.parent.mkdir(parents=True, exist_ok=True)
    base = getattr(sys, "_base_executable", sys.executable)
    for argv in (
        [base, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", str(REQUIREMENTS)],
    ):
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{out.decode(errors='replace')[-2000:]}")
    marker.write_text(requirements_digest(text))
    return python


class Redis:
    """A private loopback redis-server on a free port with its dir under the temp dir."""

    def __init__(self, tmp: Path, name: str, *, durable: bool) -> None:
        self.name = name
        self.dir = tmp / name
        self.port = embedded.free_port()
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if durable else ["--appendonly", "no"]
        self.argv = [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--save",
            "",
            *persistence,
            "--daemonize",
            "no",
        ]
        self.proc: infra.Proc | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self, procs: list[infra.Proc]) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = infra.Proc(self.name, self.argv, log_dir=self.dir)
        procs.append(self.proc)
        await self.proc.start()
        await self.proc.wait_log("Ready to accept connections", 20)
        return self.url


@dataclasses.dataclass
class Side:
    """Totals of one side of a comparison over its segments."""

    count: int = 0
    seconds: float = 0.0
    cpu: float = 0.0
    rates: list[float] = dataclasses.field(default_factory=list)
    per_process: dict[str, float] = dataclasses.field(default_factory=dict)

    def add(self, count: int, seconds: float, cpu: dict[str, float]) -> None:
        self.count += count
        self.seconds += seconds
        self.cpu += sum(cpu.values())
        for name, used in cpu.items():
            self.per_process[name] = self.per_process.get(name, 0.0) + used
        self.rates.append(count / seconds if seconds else 0.0)

    def breakdown(self) -> str:
        used = sorted(self.per_process.items(), key=lambda kv: -kv[1])
        return ", ".join(f"{name} {v * 1000 / max(self.count, 1):.2f}" for name, v in used)

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms(self) -> float:
        return self.cpu * 1000 / max(self.count, 1)


@dataclasses.dataclass
class Stack:
    """One Headrace stack: its nats-server, database, API and pipeline, and the CPU it is charged."""

    label: str
    nats: infra.Nats
    api_url: str
    pg: asyncpg.Connection
    procs: list[infra.Proc]

    def pgids(self) -> dict[int, str]:
        out = {p.pid: p.name.removesuffix("-2m") for p in self.procs if p.alive and p.pid is not None}
        if self.nats.embedded.proc is not None:
            out[self.nats.embedded.proc.pid] = "nats-server"
        return out


class Peers:
    """The `--peers` measurements, run after the existing rows on `bench`'s stack (and a second one at 2m)."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.args = bench.args
        self.tmp = bench.tmp / "peers"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.procs: list[infra.Proc] = []
        self.clients: dict[str, infra.Proc] = {}
        self.workers: dict[str, infra.Proc] = {}
        self.redis: dict[str, Redis] = {}
        self.python: Path | None = None
        self.skip_reason: str | None = None
        self.stack_2m: Stack | None = None
        self.extra: list[tuple[infra.Nats, infra.Database]] = []
        self.rr_nc: Any = None
        self.http: aiohttp.ClientSession | None = None
        self.sync_mode = ""
        self.latency: dict[str, list[float]] = {}

    def say(self, message: str) -> None:
        self.bench.say(message)

    # --- set-up ---------------------------------------------------------------------------------

    async def prepare(self) -> None:
        """The venv first (it may take a minute the first time), before any stack runs."""
        if shutil.which("redis-server") is None:
            self.skip_reason = "redis-server is not on PATH"
            return
        venv = Path(self.args.peers_venv).expanduser() if self.args.peers_venv else DEFAULT_VENV
        try:
            self.python = await ensure_venv(venv, self.say)
        except Exception as exc:
            self.skip_reason = f"the peers venv could not be set up ({exc})"

    async def _spawn(self, name: str, argv: list[str], **kw: Any) -> infra.Proc:
        proc = infra.Proc(name, argv, log_dir=self.tmp, **kw)
        self.procs.append(proc)
        return await proc.start()

    async def start_peers(self) -> None:
        assert self.python is not None
        bin_dir = self.python.parent
        cores = str(self.bench.cores)
        for variant, durable in (("plain", False), ("durable", True)):
            self.redis[variant] = Redis(self.tmp, f"redis-{variant}", durable=durable)
            url = await self.redis[variant].start(self.procs)
            env = {"PEER_REDIS_URL": url}
            systems = ("celery", "dramatiq") if variant == "plain" else ("celery",)
            for system in systems:
                if system == "celery":
                    argv = [
                        str(bin_dir / "celery"),
                        "-A",
                        "bench.peer_celery",
                        "worker",
                        "--pool",
                        "prefork",
                        "--concurrency",
                        cores,
                        "--loglevel",
                        "warning",
                        "--without-gossip",
                        "--without-mingle",
                        "--without-heartbeat",
                    ]
                else:  # default processes (cores) x threads (8)
                    argv = [str(bin_dir / "dramatiq"), "bench.peer_dramatiq"]
                self.workers[f"{system}-{variant}"] = await self._spawn(f"{system}-{variant}", argv, env=env)
            client = await self._spawn(
                f"peer-client-{variant}",
                [str(self.python), "-m", "bench.peer_client"],
                env=env,
                stdin_pipe=True,
                stdout_pipe=True,
            )
            await client.readline(60)
            self.clients[variant] = client
        # the workers print little at warning level: a first round trip says they are consuming
        for key in self.workers:
            system, variant = key.split("-")
            await self._client(variant, {"op": "rtt", "system": system, "count": 1}, 60)

    async def start_stack_2m(self) -> None:
        """A second nats-server at sync_interval 2m with its own database and four services."""
        bench = self.bench
        tmp = bench.tmp / "stack-2m"
        tmp.mkdir(parents=True, exist_ok=True)
        nats_2m = infra.Nats(tmp, "2m")
        db = infra.Database(tmp)
        self.extra.append((nats_2m, db))
        nats_url = await nats_2m.start()
        database_url = await db.create()
        port = embedded.free_port()
        config = infra.write_config(
            tmp / "config.yaml",
            api_port=port,
            log_level=self.args.log_level,
            echo_parallelism=bench.echo_parallelism,
            py_parallelism=self.args.py_parallelism,
        )
        env = {"NATS_URL": nats_url, "DATABASE_URL": database_url}
        procs = []
        for command in ("api", "projector", "dispatcher", "runner"):
            proc = infra.Proc(
                f"{command}-2m", infra.python_argv("services.cli", "-c", str(config), command), log_dir=tmp, env=env
            )
            self.procs.append(proc)
            procs.append(await proc.start())
        api_url = f"http://127.0.0.1:{port}"
        await infra.wait_http_ok(api_url + "/healthz", 60, procs[0])
        for proc in procs[1:]:
            await proc.wait_log(f"headrace {proc.name.removesuffix('-2m')} started", 60)
        self.stack_2m = Stack("2m", nats_2m, api_url, await asyncpg.connect(database_url), procs)
        self.say(f"peers: second stack at sync_interval 2m: nats {nats_url}, database {db.name}")

    def main_stack(self) -> Stack:
        bench = self.bench
        assert bench.pg is not None
        procs = [p for p in bench.procs if p.name in ("api", "dispatcher", "runner", "projector")]
        return Stack(self.args.nats_sync, bench.nats, bench.api_url, bench.pg, procs)

    async def teardown(self) -> None:
        if self.http is not None:
            await self.http.close()
        if self.rr_nc is not None:
            with contextlib.suppress(Exception):
                await self.rr_nc.close()
        if self.stack_2m is not None:
            with contextlib.suppress(Exception):
                await self.stack_2m.pg.close()
        for client in self.clients.values():
            with contextlib.suppress(Exception):
                await client.send({"op": "quit"})
        await asyncio.gather(*(p.stop() for p in reversed(self.procs)), return_exceptions=True)
        for nats_server, db in self.extra:
            for step in (nats_server.stop(), db.drop()):
                try:
                    await step
                except Exception as exc:
                    self.say(f"peers: cleanup failed: {exc!r}")

    # --- one segment each ---------------------------------------------------------------------

    async def _client(self, variant: str, cmd: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        client = self.clients[variant]
        await client.send(cmd)
        reply = await client.readline(timeout_s)
        if "error" in reply:
            raise RuntimeError(f"peer client ({variant}): {reply['error']}\n{client.tail()}")
        return reply

    def _loadgen_pgid(self) -> dict[int, str]:
        lg = self.bench.loadgen
        return {lg.pid: "loadgen"} if lg is not None and lg.pid is not None else {}

    async def peer_segment(self, system: str, variant: str, count: int) -> tuple[int, float, dict[str, float]]:
        pgids: dict[int, str] = {}
        for name, proc in (
            ("workers", self.workers[f"{system}-{variant}"]),
            ("client", self.clients[variant]),
            ("redis-server", self.redis[variant].proc),
        ):
            if proc is not None and proc.pid is not None:
                pgids[proc.pid] = name
        before = group_cpu_seconds(pgids)
        r = await self._client(variant, {"op": "burst", "system": system, "count": count, "timeout": 300}, 330)
        cpu = cpu_delta(before, group_cpu_seconds(pgids))
        if not r["complete"]:
            raise RuntimeError(
                f"{system} ({variant} redis): only {r['ok']} of {count} jobs done in {r['seconds']:.0f}s"
            )
        return r["ok"], r["seconds"], cpu

    async def headrace_segment(
        self, stack: Stack, count: int, *, direct: bool = False
    ) -> tuple[int, float, dict[str, float]]:
        pgids = stack.pgids() | self._loadgen_pgid()
        before = group_cpu_seconds(pgids)
        cmd = {"op": "nats_burst", "nats": stack.nats.url, "count": count} if direct else None
        r = await self.bench._jobs("echo_py", count, api_url=stack.api_url, pg=stack.pg, cmd=cmd)
        cpu = cpu_delta(before, group_cpu_seconds(pgids))
        if not r["complete"]:
            raise RuntimeError(f"headrace ({stack.label}): only {r['finished']} of {count} jobs final")
        if r["not_succeeded"]:  # cumulative over the run: any at all means a no-op job did not succeed
            raise RuntimeError(f"headrace ({stack.label}): jobs not succeeded: {r['not_succeeded']}")
        return r["finished"], r["elapsed"], cpu

    # --- comparisons ------------------------------------------------------------------------------

    async def compare(
        self, name: str, stack: Stack, system: str, variant: str, goal: float | None, *, direct: bool = False
    ) -> None:
        seg_s = max(1.0, self.args.seconds / 2)
        # warm-ups size the segments so that each lasts about seg_s on either side (x1.5: a small
        # batch underestimates the steady rate, as in Bench.e2e)
        h_warm = await self.headrace_segment(stack, 300, direct=direct)
        p_warm = await self.peer_segment(system, variant, 500)
        sizes = {
            "headrace": max(300, int(h_warm[0] / h_warm[1] * seg_s * 1.5)),
            "peer": max(500, int(p_warm[0] / p_warm[1] * seg_s * 1.5)),
        }
        sides = {"headrace": Side(), "peer": Side()}
        self.say(
            f"peers: {name}: {PAIRS} ABBA pairs, {sizes['headrace']} headrace / {sizes['peer']} {system} jobs "
            "per segment"
        )
        for which in abba(PAIRS):
            if which == "headrace":
                sides[which].add(*await self.headrace_segment(stack, sizes[which], direct=direct))
            else:
                sides[which].add(*await self.peer_segment(system, variant, sizes[which]))
        h, p = sides["headrace"], sides["peer"]
        ratio = h.rate / p.rate if p.rate else None
        self.bench.add_row(
            name,
            f"{h.rate:,.0f} jobs/s · {h.cpu_ms:.2f} CPU ms/job",
            f"{p.rate:,.0f} jobs/s · {p.cpu_ms:.2f} CPU ms/job",
            ratio,
            goal,
            headrace_value=h.rate,
            baseline_value=p.rate,
            unit="jobs/s",
        )
        self.bench.details.append(
            f"peers/{name}: headrace {h.count} jobs in {h.seconds:.2f}s (segments "
            f"{', '.join(f'{r:,.0f}' for r in h.rates)}), {system} {p.count} in {p.seconds:.2f}s (segments "
            f"{', '.join(f'{r:,.0f}' for r in p.rates)}); CPU ms/job headrace {h.cpu_ms:.2f} vs {system} {p.cpu_ms:.2f}"
            f" (ratio {h.cpu_ms / p.cpu_ms if p.cpu_ms else 0:.1f}x); per process: headrace {h.breakdown()}; "
            f"{system} {p.breakdown()}"
        )

    # --- latency ------------------------------------------------------------------------------

    async def _setup_latency(self, stack: Stack) -> None:
        from bench import pipelines

        self.rr_nc = await nats.connect(stack.nats.url)
        js = self.rr_nc.jetstream()
        await js.add_stream(
            api.StreamConfig(
                name=pipelines.RR_STREAM,
                subjects=[f"{pipelines.RR_REQUESTS}.>", f"{pipelines.RR_REPLIES}.>"],
                storage=api.StorageType.FILE,
                duplicate_window=120.0,
            )
        )
        rr = await self._spawn(
            "responder", infra.python_argv("bench.pipelines", "--responder", stack.nats.url), stdout_pipe=True
        )
        assert rr.proc is not None and rr.proc.stdout is not None
        line = await asyncio.wait_for(rr.proc.stdout.readline(), timeout=30)
        if line.strip() != b"ready":
            raise RuntimeError(f"responder did not start:\n{rr.tail()}")
        self.http = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {infra.TOKEN}"}, connector=aiohttp.TCPConnector(limit=8)
        )
        # does POST /plugin/{p}/{c} take ?wait=? (another branch may add it): a 200 with a final status says so
        async with self.http.post(f"{stack.api_url}/plugin/echo_py/poll?wait=true", json={"payload": {}}) as resp:
            body = orjson.loads(await resp.read())
        self.sync_mode = "wait" if resp.status == 200 and body.get("status") == "succeeded" else "poll"

    async def jetstream_rr(self, n: int) -> float:
        from bench import pipelines

        return await pipelines.jetstream_round_trip(self.rr_nc, n, id_prefix="peers-rr")

    async def headrace_sync(self, stack: Stack) -> float:
        assert self.http is not None
        started = time.perf_counter()
        suffix = "?wait=true" if self.sync_mode == "wait" else ""
        async with self.http.post(f"{stack.api_url}/plugin/echo_py/poll{suffix}", json={"payload": {}}) as resp:
            body = orjson.loads(await resp.read())
        if self.sync_mode == "poll":
            job_id = body["job_id"]
            deadline = started + 10
            while body.get("status") != "succeeded":
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"job {job_id} not succeeded after 10s: {body}")
                await asyncio.sleep(POLL_S)
                async with self.http.get(f"{stack.api_url}/job/{job_id}") as resp:
                    body = orjson.loads(await resp.read())
        elif body.get("status") != "succeeded":
            raise RuntimeError(f"POST ?wait=true answered {resp.status}: {body}")
        return time.perf_counter() - started

    async def latency_rows(self, stack: Stack) -> None:
        await self._setup_latency(stack)
        n = 0

        async def local(measure: Any, count: int) -> list[float]:
            nonlocal n
            out = []
            for _ in range(count):
                n += 1
                out.append(await measure(n))
            return out

        async def peer(system: str, count: int) -> list[float]:
            return (await self._client("plain", {"op": "rtt", "system": system, "count": count}, 120))["samples"]

        measures: dict[str, Any] = {
            "jetstream": lambda k: local(self.jetstream_rr, k),
            "headrace": lambda k: local(lambda _n: self.headrace_sync(stack), k),
            "celery": lambda k: peer("celery", k),
            "dramatiq": lambda k: peer("dramatiq", k),
        }
        order = list(measures)
        for k in order:  # warm-up
            await measures[k](20)
        samples: dict[str, list[float]] = {k: [] for k in order}
        self.say(
            f"peers: sync latency, {LATENCY_ROUNDS} rounds of {LATENCY_PER_ROUND} per system "
            f"(headrace: {'POST ?wait=true' if self.sync_mode == 'wait' else 'POST then poll GET /job/{id}'})"
        )
        for r in range(LATENCY_ROUNDS):
            for k in order if r % 2 == 0 else order[::-1]:
                samples[k].extend(await measures[k](LATENCY_PER_ROUND))
        p = {k: (percentile(v, 0.5) * 1000, percentile(v, 0.99) * 1000) for k, v in samples.items()}
        self.latency = {k: list(v) for k, v in p.items()}
        how = (
            "POST /plugin/echo_py/poll?wait=true"
            if self.sync_mode == "wait"
            else f"POST /plugin/echo_py/poll then GET /job/{{id}} every {POLL_S * 1000:g} ms (the plugin POST "
            "has no ?wait= yet)"
        )
        short = "?wait=true" if self.sync_mode == "wait" else "POST+poll"
        hp, jp = p["headrace"], p["jetstream"]
        for i, (q, goal) in enumerate((("p50", P50_GOAL), ("p99", P99_GOAL))):
            self.bench.add_row(
                f"sync round trip {q} vs bare JetStream request/reply",
                f"{hp[i]:.2f} ms ({short})",
                f"{jp[i]:.2f} ms",
                hp[i] / jp[i] if jp[i] else None,
                goal,
                lower_better=True,
                headrace_value=hp[i],
                baseline_value=jp[i],
                unit="ms",
            )
        for system, label in (
            ("celery", "Celery apply_async().get()"),
            ("dramatiq", "Dramatiq send().get_result(block=True)"),
        ):
            sp = p[system]
            self.bench.add_row(
                f"sync round trip p50 vs {label}",
                f"{hp[0]:.2f} ms · p99 {hp[1]:.2f}",
                f"{sp[0]:.2f} ms · p99 {sp[1]:.2f}",
                hp[0] / sp[0] if sp[0] else None,
                None,
                lower_better=True,
                headrace_value=hp[0],
                baseline_value=sp[0],
                unit="ms",
            )
        self.bench.details.append(
            f"peers/sync round trip, headrace side: {how}; one request at a time, "
            f"{LATENCY_ROUNDS} rounds alternating the four systems"
        )
        self.bench.details.append(
            "peers/sync latency p50/p99 ms ("
            + f"{len(samples['headrace'])} samples each): "
            + ", ".join(f"{k} {v[0]:.2f}/{v[1]:.2f}" for k, v in p.items())
            + f"; headrace mean {statistics.mean(samples['headrace']) * 1000:.2f} ms"
        )

    # --- the run --------------------------------------------------------------------------------

    def comparisons(self) -> list[tuple[str, str, str, float | None, bool]]:
        """(row, stack, peer system, goal, direct) of each throughput comparison, in run order."""
        always = self.args.nats_sync
        return [
            (
                f"e2e echo_py (nats {always}) vs Celery prefork",
                "main",
                "celery-plain",
                E2E_GOAL if always == "always" else None,
                False,
            ),
            (
                f"e2e echo_py (nats {always}) vs Celery prefork, Redis appendfsync always",
                "main",
                "celery-durable",
                None,
                False,
            ),
            ("e2e echo_py (nats 2m) vs Celery prefork", "2m", "celery-plain", E2E_2M_GOAL, False),
            (
                f"submit commands straight onto NATS (nats {always}) vs Dramatiq",
                "main",
                "dramatiq-plain",
                DIRECT_GOAL,
                True,
            ),
        ]

    def skipped(self) -> None:
        for name, _, _, goal, _ in self.comparisons():
            self.bench.add_row(name, "—", f"skipped: {self.skip_reason}", None, goal)
        self.bench.details.append(f"peers: skipped, {self.skip_reason}")

    async def run(self) -> None:
        if self.skip_reason:
            self.skipped()
            return
        try:
            self.say("peers: starting Redis (plain and appendfsync always), Celery and Dramatiq workers")
            await self.start_peers()
            await self.start_stack_2m()
            stacks = {"main": self.main_stack(), "2m": self.stack_2m}
            for name, stack, peer, goal, direct in self.comparisons():
                system, variant = peer.split("-")
                stack_obj = stacks[stack]
                assert stack_obj is not None
                await self.compare(name, stack_obj, system, variant, goal, direct=direct)
            await self.latency_rows(stacks["main"])  # type: ignore[arg-type]
            self.bench.details.append(
                f"peers: Celery prefork --concurrency {self.bench.cores} (cores), Dramatiq "
                "default processes (cores) x 8 threads; one load process per Redis"
            )
        finally:
            await self.teardown()

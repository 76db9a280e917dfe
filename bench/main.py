"""`python -m bench`: stand up NATS + a fresh database + Headrace's services as processes,
measure each row against its baseline in the same run, print one table, clean up.

Rows (see bench/README.md):
    accept       POST /plugin/echo/poll 202/s of one Headrace API process vs a bare aiohttp
                 app that only parses, publishes with Nats-Msg-Id and awaits the PubAck
    inprocess    echo_py jobs/s end to end (api → dispatcher → runner → projector → Postgres)
    subprocess   echo jobs/s end to end vs the bare fork/exec rate of plugins/echo/run.py
    e2e_echo     both end-to-end rows (inprocess + subprocess)
    --peers      Celery and Dramatiq against Headrace in the same run (bench/peers.py)
    --scale      echo_py jobs/s with 1, 2, 4 runner processes, then 1, 2, 4 dispatchers (one active,
                 the others standing by), against the bare accept ceiling (bench/scale.py)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import io
import os
import pstats
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import nats
import orjson

from bench import infra, markdown, peers, scale
from services.core import embedded
from services.core import logging as hr_logging

MEASUREMENTS = ("accept", "inprocess", "subprocess")
ALIASES = {"e2e_echo": ("inprocess", "subprocess"), "e2e": ("inprocess", "subprocess"), "all": MEASUREMENTS}
FINAL = ("succeeded", "failed", "timed_out", "dead", "skipped", "cancelled")
ACCEPT_GOAL = 0.70
SUBPROCESS_GOAL = 0.90
SEGMENT_WARMUP_S = 0.25
SUBPROCESS_BATCHES = 2
LATENCY_SQL = """
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - created_at)) * 1000 AS queued_p50,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - created_at)) * 1000 AS queued_p90,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM completed_at - started_at)) * 1000 AS run_p50,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM completed_at - started_at)) * 1000 AS run_p90
FROM headrace.jobs WHERE plugin = $1 AND created_at >= $2 AND status = 'succeeded'
"""
BODY = {"payload": {"message": "bench"}}


@dataclasses.dataclass
class Row:
    name: str
    headrace: str
    baseline: str
    ratio: float | None
    goal: float | None
    ratio_text: str | None = None
    #: the numbers behind `headrace`/`baseline` for --json (rates, or ms for a latency row)
    headrace_value: float | None = None
    baseline_value: float | None = None
    unit: str = ""
    #: a latency ratio: the goal is a ceiling (ratio ≤ goal), shown as x
    lower_better: bool = False

    @property
    def met(self) -> bool | None:
        return peers.met(self.ratio, self.goal, self.lower_better)

    def cells(self) -> list[str]:
        if self.ratio_text:
            ratio = self.ratio_text
        elif self.ratio is None:
            ratio = "—"
        else:
            ratio = f"{self.ratio:.2f}x" if self.lower_better or self.unit == "jobs/s" else f"{self.ratio:.1%}"
        if self.goal is None:
            goal = "—"
        else:
            sign = "≤" if self.lower_better else "≥"
            target = f"{self.goal:g}x" if self.lower_better or self.unit == "jobs/s" else f"{self.goal:.0%}"
            goal = f"{sign} {target} {'✓' if self.met else '✗'}"
        return [self.name, self.headrace, self.baseline, ratio, goal]

    def json(self) -> dict[str, Any]:
        return peers.json_row(
            self.name,
            self.headrace_value,
            self.baseline_value,
            self.ratio,
            self.goal,
            lower_better=self.lower_better,
            unit=self.unit,
        )


def _fmt(rate: float, unit: str) -> str:
    return f"{rate:,.0f} {unit}" if rate >= 100 else f"{rate:,.1f} {unit}"


def _rates(results: list[dict[str, Any]]) -> str:
    return ", ".join(f"{r['rate']:.1f}" for r in results)


def render_table(rows: list[Row]) -> str:
    header = ["benchmark", "headrace", "baseline", "ratio", "goal"]
    return markdown.table([header, *[r.cells() for r in rows]])


class Bench:
    def __init__(self, args: argparse.Namespace, selected: set[str]) -> None:
        self.args = args
        self.selected = selected
        self.cores = infra.cpu_count()
        self.echo_parallelism = args.echo_parallelism or self.cores
        self.tmp = Path(tempfile.mkdtemp(prefix="hr-bench-"))
        self.profile_dir: Path | None = Path(args.profile).resolve() if args.profile else None
        self.nats = infra.Nats(self.tmp, args.nats_sync)
        self.db = infra.Database(self.tmp)
        self.procs: list[infra.Proc] = []
        self.loadgen: infra.Proc | None = None
        self.api_url = ""
        self.pg: asyncpg.Connection | None = None
        self.rows: list[Row] = []
        self.details: list[str] = []
        self.accept_rate: float | None = None
        self.e2e_rates: dict[str, float] = {}
        self.peers = peers.Peers(self) if args.peers else None
        self.scale = scale.Scale(self) if args.scale else None
        #: blocks printed after the table (the scale table)
        self.sections: list[str] = []

    def add_row(
        self, name: str, headrace: str, baseline: str, ratio: float | None, goal: float | None, **kw: Any
    ) -> None:
        self.rows.append(Row(name, headrace, baseline, ratio, goal, **kw))

    def say(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    # --- set-up and tear-down -------------------------------------------

    def _service_argv(self, command: str) -> list[str]:
        profile = self.profile_dir / f"{command}.prof" if self.profile_dir else None
        return infra.python_argv("services.cli", "-c", str(self.config_path), command, profile=profile)

    async def _spawn(self, name: str, argv: list[str], **kw: Any) -> infra.Proc:
        proc = infra.Proc(name, argv, log_dir=self.tmp, **kw)
        self.procs.append(proc)
        return await proc.start()

    async def setup(self) -> None:
        if self.profile_dir:
            self.profile_dir.mkdir(parents=True, exist_ok=True)
        self.say(f"temp dir {self.tmp}")
        nats_url = await self.nats.start()
        database_url = await self.db.create()
        self.say(f"nats {nats_url} (sync_interval {self.args.nats_sync}), database {self.db.name}")
        api_port = embedded.free_port()
        self.config_path = infra.write_config(
            self.tmp / "config.yaml",
            api_port=api_port,
            log_level=self.args.log_level,
            echo_parallelism=self.echo_parallelism,
            py_parallelism=self.args.py_parallelism,
        )
        self.service_env = {"NATS_URL": nats_url, "DATABASE_URL": database_url}
        self.api_url = f"http://127.0.0.1:{api_port}"
        api = await self._spawn("api", self._service_argv("api"), env=self.service_env)
        await infra.wait_http_ok(self.api_url + "/healthz", 60, api)
        self.loadgen = await self._spawn(
            "loadgen", infra.python_argv("bench.loadgen"), stdin_pipe=True, stdout_pipe=True
        )
        await self.loadgen.readline(30)
        self.pg = await asyncpg.connect(database_url)

    async def teardown(self) -> None:
        steps: list[tuple[str, Any]] = []
        if self.pg is not None:
            steps.append(("postgres connection", self.pg.close()))
        steps.append(("processes", asyncio.gather(*(p.stop() for p in self.procs), return_exceptions=True)))
        steps.append(("nats-server", self.nats.stop()))
        steps.append(("database", self.db.drop()))
        await infra.clean_up(steps, tmp=self.tmp, keep=self.args.keep, say=self.say)

    # --- helpers --------------------------------------------------------

    def _request(self, url: str, **extra: Any) -> dict[str, Any]:
        return {
            "url": url,
            "headers": {"Authorization": f"Bearer {infra.TOKEN}"},
            "body": BODY,
            "concurrency": self.args.concurrency,
            **extra,
        }

    async def _loadgen(self, cmd: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        assert self.loadgen is not None
        await self.loadgen.send(cmd)
        reply = await self.loadgen.readline(timeout_s)
        if "error" in reply:
            raise RuntimeError(f"load generator: {reply['error']}")
        return reply

    async def _js_admin(self, *, purge: tuple[str, ...] = (), delete: tuple[str, ...] = ()) -> None:
        nc = await nats.connect(self.nats.url)
        try:
            js = nc.jetstream()
            for stream in delete:
                with contextlib.suppress(Exception):
                    await js.delete_stream(stream)
            for stream in purge:
                await js.purge_stream(stream)
        finally:
            await nc.close()

    def cpu_snapshot(self) -> dict[str, float]:
        """CPU seconds used so far by each live child (and the nats-server)."""
        pids = {p.name: p.pid for p in self.procs if p.alive and p.pid is not None}
        if self.nats.embedded.proc is not None:
            pids["nats-server"] = self.nats.embedded.proc.pid
        out = {}
        for name, pid in pids.items():
            used = infra.cpu_seconds(pid)
            if used is not None:
                out[name] = used
        return out

    # --- accept -----------------------------------------------------------

    async def accept(self) -> None:
        from bench import ceiling

        port = embedded.free_port()
        proc = await self._spawn(
            "ceiling", infra.python_argv("bench.ceiling", "--port", str(port), "--nats", self.nats.url)
        )
        await proc.wait_log("ready", 30)
        urls = {"ceiling": f"http://127.0.0.1:{port}/plugin/echo/poll", "headrace": f"{self.api_url}/plugin/echo/poll"}
        # alternate in short segments, ABBA-style (c h h c c h …), so that drift and other
        # tenants' load on a noisy box fall on both sides alike
        segments = max(2, round(self.args.seconds))
        seg = self.args.seconds / segments
        order = [
            k for i in range(segments) for k in (("ceiling", "headrace") if i % 2 == 0 else ("headrace", "ceiling"))
        ]
        totals = {
            k: {
                "count": 0,
                "seconds": 0.0,
                "statuses": {},
                "rates": [],
                "p50": [],
                "p99": [],
                "cpu": {},
                "with_warmup": 0.0,
            }
            for k in urls
        }
        self.say(f"accept: {segments} segments of {seg:.1f}s per side, alternating")
        for which in order:
            first = not totals[which]["rates"]
            warmup = self.args.warmup if first else SEGMENT_WARMUP_S
            cpu_before = self.cpu_snapshot()
            r = await self._loadgen(
                self._request(urls[which], op="rate", warmup=warmup, seconds=seg), timeout_s=seg + warmup + 90
            )
            t = totals[which]
            cpu_after = self.cpu_snapshot()
            for name in cpu_after.keys() & cpu_before.keys():
                t["cpu"][name] = t["cpu"].get(name, 0.0) + cpu_after[name] - cpu_before[name]
            t["with_warmup"] += r["count"] * (r["seconds"] + warmup) / r["seconds"] if r["seconds"] else 0
            t["count"] += r["count"]
            t["seconds"] += r["seconds"]
            t["rates"].append(r["rate"])
            for status, n in r["statuses"].items():
                t["statuses"][status] = t["statuses"].get(status, 0) + n
            t["p50"].append(r["p50_ms"] or 0)
            t["p99"].append(r["p99_ms"] or 0)
        await proc.stop()
        self.procs.remove(proc)
        # the accepted commands must not turn into a backlog for the end-to-end rows
        await self._js_admin(purge=("COMMANDS",), delete=(ceiling.STREAM,))
        rates = {k: t["count"] / t["seconds"] for k, t in totals.items()}
        self.accept_rate = rates["headrace"]
        self.rows.append(
            Row(
                "accept (POST /plugin/echo/poll)",
                _fmt(rates["headrace"], "req/s"),
                _fmt(rates["ceiling"], "req/s"),
                rates["headrace"] / rates["ceiling"],
                ACCEPT_GOAL,
                headrace_value=rates["headrace"],
                baseline_value=rates["ceiling"],
                unit="req/s",
            )
        )
        for k, t in totals.items():
            others = {s: n for s, n in t["statuses"].items() if s != "202"}
            self.details.append(
                f"accept/{k}: {t['count']} x 202 in {t['seconds']:.1f}s, segments "
                f"{min(t['rates']):,.0f}..{max(t['rates']):,.0f} req/s, latency p50 "
                f"{statistics.median(t['p50']):.1f} ms, p99 {max(t['p99']):.1f} ms (worst segment)"
                + (f", non-202: {others}" if others else "")
            )
            # CPU is sampled around whole segments (warm-up included): per request ≈ cpu / requests served
            busy = {
                n: v * 1000 / max(t["with_warmup"], 1)
                for n, v in t["cpu"].items()
                if n in ("api", "ceiling", "loadgen", "nats-server")
            }
            self.details.append(
                f"accept/{k} CPU ms per request: "
                + ", ".join(f"{n} {v:.2f}" for n, v in sorted(busy.items(), key=lambda kv: -kv[1]))
            )
        pairs = [h / c for h, c in zip(totals["headrace"]["rates"], totals["ceiling"]["rates"], strict=True) if c]
        if pairs:
            self.details.append(
                f"accept ratio per segment pair: {min(pairs):.0%}..{max(pairs):.0%} "
                f"(median {statistics.median(pairs):.0%})"
            )

    # --- end to end -----------------------------------------------------

    async def start_pipeline(self) -> None:
        for command in ("projector", "dispatcher", "runner"):
            await self._spawn(command, self._service_argv(command), env=self.service_env)
        for proc in self.procs:
            if proc.name in ("projector", "dispatcher", "runner"):
                await proc.wait_log(f"headrace {proc.name} started", 60)

    async def _counts(self, plugin: str, pg: asyncpg.Connection | None = None) -> dict[str, int]:
        pg = pg or self.pg
        assert pg is not None
        rows = await pg.fetch(
            "SELECT status, count(*) AS n FROM headrace.jobs WHERE plugin = $1 GROUP BY status", plugin
        )
        return {r["status"]: r["n"] for r in rows}

    async def _jobs(
        self,
        plugin: str,
        count: int,
        *,
        api_url: str | None = None,
        pg: asyncpg.Connection | None = None,
        cmd: dict[str, Any] | None = None,
        counter: Callable[[str, asyncpg.Connection | None], Awaitable[dict[str, int]]] | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Submit `count` jobs at `concurrency` and wait until all are final in Postgres (the stack of
        `api_url`/`pg`, by default the bench's own; `cmd`: another load generator command than the POSTs;
        `counter`: how to count the plugin's jobs by status, by default the jobs rows; `timeout_s`: how long to
        wait for them, by default 12 x --seconds and at least a minute)."""
        counter = counter or self._counts
        before = sum(n for s, n in (await counter(plugin, pg)).items() if s in FINAL)
        target = before + count
        t0 = time.perf_counter()
        if cmd is None:
            cmd = self._request(f"{api_url or self.api_url}/plugin/{plugin}/poll", op="burst", count=count)
        else:
            cmd = {"plugin": plugin, "command": "poll", "body": BODY, **cmd}
        submit = asyncio.create_task(self._loadgen(cmd, timeout_s=600))
        deadline = t0 + (timeout_s or max(60.0, self.args.seconds * 12))
        counts: dict[str, int] = {}
        done = 0
        try:
            while time.perf_counter() < deadline:
                counts = await counter(plugin, pg)
                done = sum(n for s, n in counts.items() if s in FINAL)
                if done >= target:
                    break
                if submit.done() and submit.exception() is not None:
                    break
                for proc in self.procs:
                    if not proc.alive:
                        raise RuntimeError(f"{proc.name} died:\n{proc.tail()}")
                await asyncio.sleep(0.02)
            elapsed = time.perf_counter() - t0
            submitted = await submit
        finally:
            if not submit.done():
                submit.cancel()
        finished = done - before
        return {
            "count": count,
            "finished": finished,
            "elapsed": elapsed,
            "rate": finished / elapsed,
            "submit_seconds": submitted["seconds"],
            "submitted": submitted["ok"],
            "submit_statuses": submitted["statuses"],
            "complete": done >= target,
            "not_succeeded": {s: n for s, n in counts.items() if s != "succeeded"},
        }

    async def e2e(
        self,
        plugin: str,
        *,
        warmup_jobs: int,
        batches: int = 1,
        between: Callable[[int], Awaitable[None]] | None = None,
    ) -> dict[str, Any]:
        """Warm up, then `batches` batches of jobs sized to last about --seconds in all;
        `between(i)` runs before batch i and after the last one (the baseline's turns)."""
        self.say(f"e2e {plugin}: warm-up with {warmup_jobs} jobs")
        warm = await self._jobs(plugin, warmup_jobs)
        if not warm["complete"]:
            raise RuntimeError(f"e2e {plugin}: warm-up did not finish: {warm}")
        # size the batches so that they last about --seconds at the warm-up's pace
        # (a small batch underestimates the steady rate, hence the 1.5)
        count = int(min(200_000, max(warmup_jobs, warm["rate"] * self.args.seconds * 1.5 / batches)))
        since = datetime.datetime.now(datetime.UTC)
        results: list[dict[str, Any]] = []
        cpu: dict[str, float] = {}
        for i in range(batches):
            if between is not None:
                await between(i)
            self.say(f"e2e {plugin}: {count} jobs (batch {i + 1}/{batches}; warm-up ran {warm['rate']:.0f} jobs/s)")
            before = self.cpu_snapshot()
            results.append(await self._jobs(plugin, count))
            after = self.cpu_snapshot()
            for name in after.keys() & before.keys():
                cpu[name] = cpu.get(name, 0.0) + after[name] - before[name]
        if between is not None:
            await between(batches)
        finished = sum(r["finished"] for r in results)
        elapsed = sum(r["elapsed"] for r in results)
        submitted = sum(r["submitted"] for r in results)
        submit_s = sum(r["submit_seconds"] for r in results)
        rate = finished / elapsed
        not_succeeded: dict[str, int] = {}
        for r in results:
            for status, n in r["not_succeeded"].items():
                not_succeeded[status] = not_succeeded.get(status, 0) + n
        incomplete = [r for r in results if not r["complete"]]
        self.details.append(
            f"e2e/{plugin}: {finished} jobs final in {elapsed:.2f}s"
            + (f" over {batches} batches ({_rates(results)} jobs/s)" if batches > 1 else "")
            + f"; submitted {submitted} x 202 at {submitted / submit_s:,.0f} req/s while the pipeline ran"
            + (f"; not succeeded: {not_succeeded}" if not_succeeded else "")
            + (f"; INCOMPLETE: {len(incomplete)} batch(es) hit the deadline" if incomplete else "")
        )
        used = sorted(cpu.items(), key=lambda kv: -kv[1])
        self.details.append(
            f"e2e/{plugin} CPU ms per job (% of a core): "
            + ", ".join(f"{k} {v * 1000 / max(finished, 1):.2f} ({v / elapsed:.0%})" for k, v in used if v >= 0.001)
        )
        assert self.pg is not None
        lat = await self.pg.fetchrow(LATENCY_SQL, plugin, since)
        if lat is not None and lat["queued_p50"] is not None:
            self.details.append(
                f"e2e/{plugin} latency p50/p90 ms: created→started {lat['queued_p50']:.0f}/{lat['queued_p90']:.0f}, "
                f"started→completed {lat['run_p50']:.0f}/{lat['run_p90']:.0f} (event times from the read model)"
            )
        self.e2e_rates[plugin] = rate
        return {"rate": rate, "results": results, "cpu": cpu, "finished": finished}

    async def inprocess(self) -> None:
        result = await self.e2e("echo_py", warmup_jobs=200)
        baseline = _fmt(self.accept_rate, "req/s (API intake)") if self.accept_rate else "—"
        ratio = result["rate"] / self.accept_rate if self.accept_rate else None
        self.rows.append(
            Row(
                f"e2e_echo · inprocess (echo_py, parallelism {self.args.py_parallelism})",
                _fmt(result["rate"], "jobs/s"),
                baseline,
                ratio,
                None,
                headrace_value=result["rate"],
                baseline_value=self.accept_rate,
                unit="jobs/s ÷ req/s",
            )
        )

    async def _forkexec(self, request_file: Path, seconds: float) -> dict[str, Any]:
        proc = await self._spawn(
            "forkexec",
            infra.python_argv(
                "bench.forkexec",
                "--entrypoint",
                str(infra.REPO / "plugins" / "echo" / "run.py"),
                "--request-file",
                str(request_file),
                "--concurrency",
                str(self.echo_parallelism),
                "--seconds",
                str(seconds),
                "--warmup",
                str(min(self.args.warmup, 0.5)),
            ),
            stdout_pipe=True,
        )
        try:
            return await proc.readline(seconds + 60)
        finally:
            await proc.stop()
            self.procs.remove(proc)

    async def subprocess(self) -> None:
        from services.runner import protocol

        # the request the runner builds for POST /plugin/echo/poll with BODY
        request = protocol.build_request(
            job_id="0" * 32,
            command="poll",
            config={"message": "Hello"},
            secrets={},
            state={},
            payload=BODY["payload"],
            context=None,
            event=None,
            timeout_s=30,
        )
        request_file = self.tmp / "echo-request.json"
        request_file.write_bytes(orjson.dumps(request))
        # bare, batch, bare, batch, bare: the baseline's turns surround Headrace's, so drift
        # and other tenants' load on a noisy box fall on both sides alike
        turns: list[dict[str, Any]] = []
        segment = self.args.seconds / (SUBPROCESS_BATCHES + 1)

        async def bare_turn(i: int) -> None:
            self.say(f"subprocess: bare fork/exec for {segment:.1f}s (concurrency {self.echo_parallelism})")
            turns.append(await self._forkexec(request_file, segment))

        result = await self.e2e(
            "echo", warmup_jobs=max(20, 4 * self.echo_parallelism), batches=SUBPROCESS_BATCHES, between=bare_turn
        )
        spawns = sum(t["count"] for t in turns)
        seconds = sum(t["seconds"] for t in turns)
        failed = sum(t["failed"] for t in turns)
        bare = spawns / seconds
        self.details.append(
            f"fork/exec bare: {spawns} spawns in {seconds:.1f}s of wall clock ({_rates(turns)} spawns/s per turn, "
            f"as {turns[0].get('user') or 'the runner user'}, spawns finished in the window / its length)"
            + (f", failed: {failed}" if failed else "")
        )
        plugin_ms = [t["child_cpu_ms"] for t in turns if t.get("child_cpu_ms")]
        if plugin_ms and result.get("cpu"):
            # bare keeps every core busy with plugins; Headrace's services share those cores
            plugin = sum(plugin_ms) / len(plugin_ms)
            services = sum(result["cpu"].values()) * 1000 / max(result["finished"], 1)
            self.details.append(
                f"fork/exec CPU-bound ceiling: a bare spawn costs {plugin:.1f} ms CPU, Headrace's processes "
                f"{services:.1f} ms per job on top: on an otherwise idle box, where bare plugins fill every core, the ratio "
                f"cannot exceed {plugin / (plugin + services):.0%}"
            )
        self.rows.append(
            Row(
                f"e2e_echo · subprocess (echo, parallelism {self.echo_parallelism})",
                _fmt(result["rate"], "jobs/s"),
                _fmt(bare, "spawns/s (bare fork/exec)"),
                result["rate"] / bare,
                SUBPROCESS_GOAL,
                headrace_value=result["rate"],
                baseline_value=bare,
                unit="jobs/s ÷ spawns/s",
            )
        )

    # --- the run --------------------------------------------------------

    async def run(self) -> None:
        started = time.perf_counter()
        try:
            if self.peers is not None:
                await self.peers.prepare()
            await self.setup()
            if "accept" in self.selected:
                await self.accept()
            if self.scale is not None:
                await self.scale.run()
            if self.selected & {"inprocess", "subprocess"} or self.peers is not None:
                await self.start_pipeline()
                if "inprocess" in self.selected:
                    await self.inprocess()
                if "subprocess" in self.selected:
                    await self.subprocess()
                if self.peers is not None:
                    await self.peers.run()
        finally:
            self.say("cleaning up")
            await self.teardown()
        self.report(time.perf_counter() - started)

    def report(self, total_s: float) -> None:
        print()
        print(
            f"Headrace bench — {self.cores} cores, python {sys.version.split()[0]}, "
            f"nats sync_interval {self.args.nats_sync}, {self.args.concurrency} client connections, "
            f"--seconds {self.args.seconds:g}, log_level {self.args.log_level}"
            + (", UNDER cProfile (numbers are not comparable)" if self.profile_dir else "")
        )
        print()
        print(render_table(self.rows))
        print()
        for section in self.sections:
            print(section)
            print()
        if "echo" in self.e2e_rates and "echo_py" in self.e2e_rates:
            speedup = self.e2e_rates["echo_py"] / self.e2e_rates["echo"]
            print(f"in-process vs subprocess plugin: {speedup:.1f}x the jobs/s")
        for line in self.details:
            print("  " + line)
        print(f"  total wall time {total_s:.0f}s")
        if self.args.json:
            Path(self.args.json).write_bytes(orjson.dumps([r.json() for r in self.rows], option=orjson.OPT_INDENT_2))
            print(f"  rows written to {self.args.json}")
        if self.profile_dir:
            print_profiles(self.profile_dir)


def print_profiles(directory: Path, top: int = 25) -> None:
    for path in sorted(directory.glob("*.prof")):
        out = io.StringIO()
        try:
            stats = pstats.Stats(str(path), stream=out)
        except Exception as exc:
            print(f"\n{path.name}: unreadable ({exc})")
            continue
        stats.strip_dirs().sort_stats("tottime").print_stats(top)
        print(f"\n===== {path.name} (by tottime) =====")
        print("\n".join(out.getvalue().splitlines()[4:]))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per measurement (default 5)")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        help=f"run only these (repeatable or comma-separated): {', '.join([*MEASUREMENTS, 'e2e_echo', 'peers'])}",
    )
    parser.add_argument("--concurrency", type=int, default=64, help="client connections (default 64)")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds before each rate window")
    parser.add_argument("--py-parallelism", type=int, default=16, help="echo_py parallelism (default 16)")
    parser.add_argument("--echo-parallelism", type=int, default=0, help="echo parallelism (default: cores)")
    parser.add_argument("--nats-sync", default="always", help="nats-server sync_interval (default always)")
    parser.add_argument("--log-level", default="info", help="services' log level (default info)")
    parser.add_argument("--profile", metavar="DIR", help="run the services under cProfile, write DIR/<svc>.prof")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, nats store)")
    parser.add_argument("--peers", action="store_true", help="also measure Celery and Dramatiq in the same run")
    parser.add_argument("--peers-venv", metavar="DIR", help=f"the peers' venv (default {peers.DEFAULT_VENV})")
    parser.add_argument("--json", metavar="PATH", help="write the rows as a JSON list to PATH")
    parser.add_argument(
        "--scale",
        action="store_true",
        help="jobs/s with 1, 2, 4 runner and dispatcher processes (bench/scale.py); alone unless --only names rows",
    )
    parser.add_argument("--jobs", type=int, default=1000, help="--scale: measured jobs per shape and round (1000)")
    parser.add_argument("--scale-runners", default="1,2,4", help="--scale: runner counts, 1 dispatcher (1,2,4)")
    parser.add_argument("--scale-dispatchers", default="1,2,4", help="--scale: dispatcher counts (1,2,4)")
    parser.add_argument(
        "--scale-dispatcher-runners", type=int, default=1, help="--scale: runners beside the dispatcher series (1)"
    )
    parser.add_argument("--scale-rounds", type=int, default=4, help="--scale: rounds over the shapes, ABBA (4)")
    return parser


def selection(only: list[str]) -> set[str]:
    if not only:
        return set(MEASUREMENTS)
    out: set[str] = set()
    for item in (name.strip() for arg in only for name in arg.split(",")):
        if item in MEASUREMENTS:
            out.add(item)
        elif item in ALIASES:
            out.update(ALIASES[item])
        elif item == "peers":  # --only peers: just the peer rows (main() sets --peers)
            continue
        elif item:
            raise SystemExit(f"bench: unknown measurement {item!r} (known: {', '.join([*MEASUREMENTS, *ALIASES])})")
    return out


async def _amain(bench: Bench) -> None:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    await bench.run()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # --scale alone measures only the scale rows; with --only it adds them to those
    selected = selection(args.only) if args.only or not args.scale else set()
    if args.scale:
        try:
            scale.parse_counts(args.scale_runners), scale.parse_counts(args.scale_dispatchers)
        except ValueError as exc:
            raise SystemExit(f"bench: --scale: {exc}") from None
        if min(args.jobs, args.scale_rounds, args.scale_dispatcher_runners) < 1:
            raise SystemExit("bench: --jobs, --scale-rounds and --scale-dispatcher-runners must be at least 1")
    args.peers = args.peers or any(name.strip() == "peers" for arg in args.only for name in arg.split(","))
    hr_logging.configure("warning")
    os.environ.pop("HEADRACE_CONFIG", None)
    bench = Bench(args, selected)
    return infra.run_main("bench", _amain(bench), tmp=bench.tmp, keep=args.keep)

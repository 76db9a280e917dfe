"""Pipeline benchmark: how fast does an event get through Headrace's pipelines?

    python -m bench.pipelines [--requests 400] [--events 1000] [--nats-sync always|2m] [--keep]

Stands up, like `python -m bench` does (bench/infra.py): a nats-server from the wheel
(`EmbeddedNats`) on a free port with its store in a temp dir, a fresh `hr_bench_<random>`
database, and the four services each as its own OS process on a config with two pipelines:

    sync1   synchronous, one step: echo_py (in-process plugin)
    tick3   on: bench.tick, three steps: echo_py → echo_py → echo_py

Rows (printed as a table):

- `sync 1-step pipeline`: latency of `POST /pipeline/sync1` answered 200 with the result, one
  request at a time over a keep-alive connection; p50/p99 against the goal p50 ≤ 3x, p99 ≤ 5x
  the baseline. `POST /plugin/echo_py/poll?wait=` likewise (one job, its outcome in the answer).
  Next to them, measured in the same run and alternating with them in rounds, the floor any such round
  trip sits on: a **bare JetStream request/reply** — the client subscribes to a reply subject,
  publishes the request into a file-backed stream (PubAck), a responder in its own process pulls
  it from a durable consumer, publishes the reply into the stream (PubAck) and acks.
- `3-step async pipeline`: `--events` events published by a plain JetStream publisher on
  `ingest.bench.tick`; the clock runs from the first publish until the last pipeline root has
  succeeded (watched on `evt.job.*.succeeded`). events/s, step jobs/s, and the EVENTS records
  written per second.

Everything it started is stopped, the database dropped and the temp dir removed at the end
(`--keep` keeps the temp dir with every process's log).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import nats
import orjson
import yaml
from nats.js import api

from bench import infra, markdown
from services.core import embedded, envelope
from services.core import logging as hr_logging

#: issue 13: a sync step's p50 within 3x, its p99 within 5x the bare JetStream request/reply of the same run
GOAL_P50_RATIO = 3.0
GOAL_P99_RATIO = 5.0
RR_STREAM = "BENCHRR"
RR_REQUESTS = "benchrr.req"
RR_REPLIES = "benchrr.reply"
TICK_TYPE = "bench.tick"
ROUNDS = 4


def config_doc(api_port: int, log_level: str, py_parallelism: int) -> dict[str, Any]:
    """bench/infra.py's config shape plus the two pipelines."""
    step = {"uses": "echo_py"}
    return {
        "service": {"name": "headrace-bench-pipelines", "log_level": log_level, "max_workers": py_parallelism},
        "plugin_roots": [str(infra.REPO / "plugins")],
        "api": {
            "enabled": True,
            "listen": f"127.0.0.1:{api_port}",
            "max_concurrent_sync": 64,
            "auth": {"tokens": [{"name": "bench", "token": infra.TOKEN, "scopes": ["*"]}]},
        },
        "plugins": {"echo_py": {"enabled": True, "parallelism": py_parallelism}},
        "pipelines": [
            {"name": "sync1", "execution_mode": "synchronous", "timeout": "10s", "steps": [{"id": "only", **step}]},
            {
                "name": "tick3",
                "on": TICK_TYPE,
                "steps": [{"id": "one", **step}, {"id": "two", **step}, {"id": "three", **step}],
            },
        ],
    }


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# --- the baseline's responder (its own process) ----------------------------------------------


async def responder(url: str) -> None:
    """Pull each request from the durable consumer, publish the reply into the stream, ack."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe(f"{RR_REQUESTS}.>", durable="bench-responder", stream=RR_STREAM)
    print("ready", flush=True)
    while True:
        try:
            msgs = await sub.fetch(1, timeout=5)
        except (TimeoutError, nats.errors.TimeoutError):
            continue
        for msg in msgs:
            reply = RR_REPLIES + msg.subject.removeprefix(RR_REQUESTS)
            await js.publish(reply, msg.data)
            await msg.ack()


# --- the run ----------------------------------------------------------------------------------


class PipelineBench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="hr-bench-pipelines-"))
        self.nats = infra.Nats(self.tmp, args.nats_sync)
        self.db = infra.Database(self.tmp)
        self.procs: list[infra.Proc] = []
        self.api_url = ""
        self.nc: Any = None
        self.http: aiohttp.ClientSession | None = None
        self.rows: list[tuple[str, str, str, str]] = []
        self.details: list[str] = []

    def say(self, message: str) -> None:
        print(f"bench.pipelines: {message}", file=sys.stderr, flush=True)

    async def _spawn(self, name: str, argv: list[str], **kw: Any) -> infra.Proc:
        proc = infra.Proc(name, argv, log_dir=self.tmp, **kw)
        self.procs.append(proc)
        return await proc.start()

    async def setup(self) -> None:
        self.say(f"temp dir {self.tmp}")
        nats_url = await self.nats.start()
        database_url = await self.db.create()
        self.say(f"nats {nats_url} (sync_interval {self.args.nats_sync}), database {self.db.name}")
        api_port = embedded.free_port()
        config_path = self.tmp / "config.yaml"
        config_path.write_text(
            yaml.safe_dump(config_doc(api_port, self.args.log_level, self.args.py_parallelism), sort_keys=False)
        )
        env = {"NATS_URL": nats_url, "DATABASE_URL": database_url}
        self.api_url = f"http://127.0.0.1:{api_port}"
        api_proc = await self._spawn("api", infra.python_argv("services.cli", "-c", str(config_path), "api"), env=env)
        await infra.wait_http_ok(self.api_url + "/healthz", 60, api_proc)
        for command in ("projector", "dispatcher", "runner"):
            await self._spawn(command, infra.python_argv("services.cli", "-c", str(config_path), command), env=env)
        for proc in self.procs[1:]:
            await proc.wait_log(f"headrace {proc.name} started", 60)
        self.nc = await nats.connect(nats_url)
        js = self.nc.jetstream()
        await js.add_stream(
            api.StreamConfig(
                name=RR_STREAM,
                subjects=[f"{RR_REQUESTS}.>", f"{RR_REPLIES}.>"],
                storage=api.StorageType.FILE,
                duplicate_window=120.0,
            )
        )
        rr = await self._spawn(
            "responder", infra.python_argv("bench.pipelines", "--responder", nats_url), stdout_pipe=True
        )
        line = await asyncio.wait_for(rr.proc.stdout.readline(), timeout=30)  # type: ignore[union-attr]
        if line.strip() != b"ready":
            raise RuntimeError(f"responder did not start:\n{rr.tail()}")
        self.http = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {infra.TOKEN}"}, connector=aiohttp.TCPConnector(limit=8)
        )

    async def teardown(self) -> None:
        steps: list[tuple[str, Any]] = []
        if self.http is not None:
            steps.append(("http session", self.http.close()))
        if self.nc is not None:
            steps.append(("nats connection", self.nc.close()))
        steps.append(("processes", asyncio.gather(*(p.stop() for p in self.procs), return_exceptions=True)))
        steps.append(("nats-server", self.nats.stop()))
        steps.append(("database", self.db.drop()))
        await infra.clean_up(steps, tmp=self.tmp, keep=self.args.keep, say=self.say)

    # --- one round trip each ----------------------------------------------------------------

    async def sync_pipeline(self, n: int) -> float:
        return await self._timed_post("/pipeline/sync1", n)

    async def sync_job(self, n: int) -> float:
        """One `POST /plugin/echo_py/poll?wait=10s`: the job's final outcome in the answer."""
        return await self._timed_post("/plugin/echo_py/poll?wait=10s", n)

    async def _timed_post(self, path: str, n: int) -> float:
        """Seconds of one POST whose answer must be a 200 with a succeeded status."""
        assert self.http is not None
        started = time.perf_counter()
        async with self.http.post(f"{self.api_url}{path}", json={"payload": {"n": n}}) as resp:
            body = await resp.read()
        elapsed = time.perf_counter() - started
        if resp.status != 200 or orjson.loads(body).get("status") != "succeeded":
            raise RuntimeError(f"POST {path} answered {resp.status}: {body[:300]!r}")
        return elapsed

    async def jetstream_rr(self, n: int) -> float:
        return await jetstream_round_trip(self.nc, n, id_prefix="rr")

    async def latency(self) -> None:
        per_round = max(1, self.args.requests // ROUNDS)
        self.say(f"sync latency: {ROUNDS} rounds of {per_round} requests per side (after a warm-up)")
        for i in range(30):
            await self.sync_pipeline(-i - 1)
            await self.sync_job(-i - 1)
            await self.jetstream_rr(-i - 1)
        headrace: list[float] = []
        waited: list[float] = []
        baseline: list[float] = []
        n = 0
        for r in range(ROUNDS):
            sides = [
                ("baseline", self.jetstream_rr, baseline),
                ("headrace", self.sync_pipeline, headrace),
                ("wait", self.sync_job, waited),
            ]
            for _, measure, samples in sides if r % 2 == 0 else sides[::-1]:
                for _ in range(per_round):
                    n += 1
                    samples.append(await measure(n))
        bp50, bp99 = percentile(baseline, 0.5) * 1000, percentile(baseline, 0.99) * 1000
        for label, samples in (
            ("sync 1-step pipeline (echo_py), latency", headrace),
            ("POST /plugin/echo_py/poll?wait=, latency", waited),
        ):
            hp50, hp99 = percentile(samples, 0.5) * 1000, percentile(samples, 0.99) * 1000
            verdict = "met" if hp50 <= GOAL_P50_RATIO * bp50 and hp99 <= GOAL_P99_RATIO * bp99 else "missed"
            self.rows.append(
                (
                    label,
                    f"p50 {hp50:.2f} ms · p99 {hp99:.2f} ms",
                    f"JetStream request/reply p50 {bp50:.2f} ms · p99 {bp99:.2f} ms",
                    f"p50 ≤ {GOAL_P50_RATIO:g}x, p99 ≤ {GOAL_P99_RATIO:g}x: {verdict}",
                )
            )
            self.details.append(
                f"{label}: {len(samples)} requests, mean {statistics.mean(samples) * 1000:.2f} ms, "
                f"p90 {percentile(samples, 0.9) * 1000:.2f} ms; p50 = {hp50 / bp50:.1f}x, "
                f"p99 = {hp99 / bp99:.1f}x the bare round trip ({len(baseline)} samples)"
            )

    # --- throughput ---------------------------------------------------------------------------

    async def throughput(self) -> None:
        await self._ingest(min(200, self.args.events), label="warm-up")
        await self._ingest(self.args.events, label="measured")

    async def _ingest(self, count: int, *, label: str) -> None:
        self.say(f"3-step pipeline: {label} batch of {count} ingested events")
        js = self.nc.jetstream()
        done = asyncio.Event()
        finished: dict[str, int] = {"succeeded": 0, "failed": 0}

        async def on_final(msg: Any) -> None:
            env = envelope.decode(msg.data)
            if env.data.get("pipeline_root") and env.data.get("command") == "tick3":
                finished["succeeded" if env.type == "job.succeeded" else "failed"] += 1
                if sum(finished.values()) >= count:
                    done.set()

        subs = [
            await self.nc.subscribe("evt.job.*.succeeded", cb=on_final),
            await self.nc.subscribe("evt.job.*.failed", cb=on_final),
        ]
        first_seq = (await js.stream_info("EVENTS")).state.last_seq
        started = time.perf_counter()
        try:
            for low in range(0, count, 256):
                futures = [
                    await js.publish_async(
                        f"ingest.{TICK_TYPE}", orjson.dumps({"type": TICK_TYPE, "payload": {"n": i}})
                    )
                    for i in range(low, min(count, low + 256))
                ]
                await asyncio.gather(*futures)
            published = time.perf_counter() - started
            await asyncio.wait_for(done.wait(), timeout=max(120.0, float(count)))
        finally:
            for sub in subs:
                await sub.unsubscribe()
        elapsed = time.perf_counter() - started
        records = (await js.stream_info("EVENTS")).state.last_seq - first_seq
        if finished["failed"]:
            raise RuntimeError(f"{finished['failed']} of {count} pipelines failed")
        if label != "measured":
            return
        rate = count / elapsed
        self.rows.append(("3-step async pipeline (ingest.bench.tick → echo_py x3)", f"{rate:,.0f} events/s", "—", "—"))
        self.details.append(
            f"3-step pipeline: {count} events in {elapsed:.2f} s (published in {published:.2f} s); "
            f"{3 * count / elapsed:,.0f} step jobs/s; {records / elapsed:,.0f} EVENTS records/s "
            f"({records / count:.1f} per event)"
        )

    # --- report ---------------------------------------------------------------------------------

    def report(self, total_s: float) -> None:
        header = ["row", "headrace", "baseline (same run)", "goal"]
        print(
            f"\nHeadrace pipelines bench — {infra.cpu_count()} cores, nats sync_interval {self.args.nats_sync}, "
            f"echo_py parallelism {self.args.py_parallelism}\n"
        )
        print(markdown.table([header, *(list(row) for row in self.rows)]))
        print()
        for detail in self.details:
            print(f"- {detail}")
        print(f"\n(total {total_s:.0f} s)")

    async def run(self) -> None:
        started = time.monotonic()
        try:
            await self.setup()
            await self.latency()
            await self.throughput()
        finally:
            await self.teardown()
        self.report(time.monotonic() - started)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.pipelines", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400, help="synchronous requests per side (default 400)")
    parser.add_argument("--events", type=int, default=1000, help="events through the 3-step pipeline (default 1000)")
    parser.add_argument("--py-parallelism", type=int, default=16, help="echo_py parallelism (default 16)")
    parser.add_argument("--nats-sync", default="always", help="nats-server sync_interval (default always)")
    parser.add_argument("--log-level", default="warning", help="the services' log level (default warning)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir with every process's log")
    parser.add_argument("--responder", metavar="NATS_URL", help=argparse.SUPPRESS)
    return parser


async def _amain(bench: PipelineBench) -> None:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    await bench.run()


async def jetstream_round_trip(nc: Any, n: int, *, id_prefix: str) -> float:
    """Seconds of one bare JetStream request/reply through the responder (`RR_REQUESTS` → `RR_REPLIES`):
    the baseline every sync row is read against."""
    started = time.perf_counter()
    got: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def on_reply(msg: Any) -> None:
        if not got.done():
            got.set_result(msg)

    sub = await nc.subscribe(f"{RR_REPLIES}.{n}", cb=on_reply)
    try:
        await nc.jetstream().publish(
            f"{RR_REQUESTS}.{n}", orjson.dumps({"n": n}), headers={"Nats-Msg-Id": f"{id_prefix}-{n}-{started}"}
        )
        await asyncio.wait_for(got, timeout=10)
    finally:
        await sub.unsubscribe()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.responder:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(responder(args.responder))
        return 0
    hr_logging.configure("warning")
    os.environ.pop("HEADRACE_CONFIG", None)
    bench = PipelineBench(args)
    return infra.run_main("bench.pipelines", _amain(bench), tmp=bench.tmp, keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())

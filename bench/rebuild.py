"""Rebuild benchmark: how fast does `headrace rebuild` re-project the event log, next to the raw
ordered replay rate of the same stream in the same run?

    python -m bench.rebuild --events 1000000 [--keep]

Starts a nats-server from the wheel and a fresh Postgres database (bench/infra.py), publishes
`--events` realistic EVENTS records — job lifecycles built with the envelope helpers the services
use (`job.queued` as the dispatcher writes it, `job.started`, `job.log` and the outcome from
services/runner/attempt.py, `job.retry_scheduled` / `job.dead` from services/dispatcher/retries.py)
— then times, alternately: a raw replay (a bare ordered consumer reading EVENTS from seq 1 and
decoding every message, no database) and `services.projector.rebuild.rebuild` (what
`headrace rebuild` runs), and prints events/s for each and their ratio against the goal ≥ 50 %.
"""

from __future__ import annotations

import argparse
import random
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from nats.js import api

from bench import infra
from services.core import bus as bus_mod
from services.core import envelope, subjects
from services.dispatcher import retries
from services.runner import attempt as attempt_mod
from services.runner import protocol

GOAL = 0.5
PUBLISH_CHUNK = 5000
PLUGINS = ("echo", "withings", "github", "slack", "rss", "weather", "email", "notion", "jira", "backup")
PLUGIN_WEIGHTS = tuple(1 / (i + 1) ** 0.8 for i in range(len(PLUGINS)))
ERRORS = (
    "connection refused to api.{plugin}.example.com:443",
    "HTTP 429 Too Many Requests (retry after {n}s)",
    "KeyError: 'items' while parsing page {n}",
    "memory threshold exceeded on worker {n}",
)
API_SOURCE = "dispatcher/bench-host-1"
RUNNER_SOURCE = "runner/bench-host-2"


def _queued(job_id: str, plugin: str, command: str, created: datetime) -> tuple[str, envelope.Envelope]:
    """The dispatcher's job.queued (services/dispatcher/decisions.py decide_submit) for an API submit."""
    data = {
        "plugin": plugin,
        "command": command,
        "payload": {"since": envelope.rfc3339(created), "page": 1},
        "submitted_by": "api",
        "attempt": 1,
        "created_at": envelope.rfc3339(created),
        "event": None,
        "context": None,
        "parent_job_id": None,
        "pipeline": None,
        "step_id": None,
        "retry_of": None,
        "dedupe_key": None,
        "route": None,
        "authority": {"token": "bench", "scopes": ["*"]},
    }
    env = envelope.make(
        "job.queued",
        source=API_SOURCE,
        job_id=job_id,
        id=f"{job_id}:queued",
        causation_id=envelope.new_id(),
        correlation_id=job_id,
        data=data,
        time=created,
    )
    return subjects.job_event(job_id, "queued"), env


def job_events(rng: random.Random, created: datetime) -> list[tuple[str, envelope.Envelope]]:
    """Every EVENTS record of one job: queued, then per attempt started, logs and an outcome; a failed
    attempt is retried (retry_scheduled) up to 3 attempts, then dead."""
    job_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    plugin = rng.choices(PLUGINS, PLUGIN_WEIGHTS)[0]
    command = rng.choice(("poll", "poll", "handle"))
    out = [_queued(job_id, plugin, command, created)]
    for n in range(1, 4):
        item = attempt_mod.WorkItem(
            job_id=job_id, plugin=plugin, command=command, payload={}, attempt=n, timeout_s=30.0, correlation_id=job_id
        )
        out.append(attempt_mod.started_event(item, source=RUNNER_SOURCE, work_seq=rng.randint(1, 10**7)))
        logs = [{"level": "info", "message": f"fetched page {i} of {plugin}"} for i in range(rng.choice((0, 1, 2)))]
        if rng.random() < 0.9:
            response = {"status": "ok", "result": {"synced": rng.randint(0, 500), "plugin": plugin}, "logs": logs}
            outcome = protocol.Outcome(status="succeeded", response=response, duration_ms=rng.randint(5, 3000))
            out.extend(attempt_mod.outcome_events(item, outcome, source=RUNNER_SOURCE))
            return out
        error = rng.choice(ERRORS).format(plugin=plugin, n=rng.randint(1, 99_999))
        outcome = protocol.Outcome(
            status="failed",
            response={"status": "error", "error": error, "logs": logs},
            error=error,
            exit_code=1,
            stderr=f"Traceback ...\n{error}",
            duration_ms=rng.randint(5, 3000),
        )
        out.extend(attempt_mod.outcome_events(item, outcome, source=RUNNER_SOURCE))
        if n == 3:
            out.append(
                retries.dead_event(
                    job_id,
                    attempt=n,
                    error=error,
                    last_status="failed",
                    plugin=plugin,
                    command=command,
                    reason=f"retries exhausted after {n} attempt(s)",
                    source=API_SOURCE,
                    correlation_id=job_id,
                )
            )
            return out
        scheduled = envelope.make(
            "job.retry_scheduled",
            source=API_SOURCE,
            job_id=job_id,
            id=f"{job_id}:{n}:retry_scheduled",
            correlation_id=job_id,
            causation_id=out[-1][1].id,
            data={
                "attempt": n + 1,
                "after_attempt": n,
                "delay_s": 1.0,
                "due_at": envelope.rfc3339(created),
                "error": error,
                "max_attempts": 3,
                "backoff_base_s": 1.0,
            },
        )
        out.append((subjects.job_event(job_id, "retry_scheduled"), scheduled))
    return out


def generate(events: int, seed: int = 11) -> Iterator[tuple[str, envelope.Envelope]]:
    rng = random.Random(seed)
    start = datetime.now(UTC) - timedelta(days=7)
    made = 0
    while made < events:
        for item in job_events(rng, start + timedelta(seconds=made * 0.5)):
            if made >= events:
                return
            yield item
            made += 1


async def publish(bus: bus_mod.Bus, events: int) -> float:
    started = time.perf_counter()
    chunk: list[tuple[str, envelope.Envelope]] = []
    done = 0
    for item in generate(events):
        chunk.append(item)
        if len(chunk) >= PUBLISH_CHUNK:
            await bus.publish_all(chunk)
            done += len(chunk)
            chunk = []
            print(
                f"\r  published {done:>9,} events ({time.perf_counter() - started:4.0f}s)",
                end="",
                file=sys.stderr,
                flush=True,
            )
    if chunk:
        await bus.publish_all(chunk)
    print(file=sys.stderr)
    return time.perf_counter() - started


async def raw_replay(bus: bus_mod.Bus, events: int) -> float:
    """Seconds for a bare ordered consumer to read and decode `events` messages from seq 1."""
    config = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=1)
    started = time.perf_counter()
    sub = await bus.js.subscribe(
        subjects.ALL_EVENTS, stream=subjects.EVENTS, ordered_consumer=True, config=config, pending_msgs_limit=100_000
    )
    try:
        seen = 0
        while seen < events:
            msg = await sub.next_msg(timeout=5)
            envelope.decode(msg.data)
            seen += 1
    finally:
        await sub.unsubscribe()
    return time.perf_counter() - started


async def run_rebuild(bus: bus_mod.Bus, url: str) -> tuple[float, dict[str, Any]]:
    from services.projector import rebuild

    started = time.perf_counter()
    stats = await rebuild.rebuild(bus, url)
    return time.perf_counter() - started, stats


async def amain(args: argparse.Namespace, tmp: Path) -> None:
    nats = infra.Nats(tmp, args.nats_sync)
    database = infra.Database(tmp)
    steps: list[tuple[str, Any]] = []
    try:
        url = await nats.start()
        bus = await bus_mod.Bus.connect(url, name="bench-rebuild")
        steps.append(("nats connection", bus.close()))
        await bus.ensure_topology()
        db_url = await database.create()
        from services.core import db

        pool = await db.connect_and_migrate(db_url, max_size=1)
        await pool.close()
        seconds = await publish(bus, args.events)
        stored = await bus.stream_last_seq(subjects.EVENTS)
        print(f"published {stored:,} events in {seconds:.0f}s ({stored / seconds:,.0f}/s)", file=sys.stderr)
        raw: list[float] = []
        rebuilt: list[float] = []
        for _ in range(args.rounds):
            raw.append(stored / await raw_replay(bus, stored))
            took, stats = await run_rebuild(bus, db_url)
            assert stats["checkpoint"] == stored, stats
            rebuilt.append(stored / took)
            print(f"  raw {raw[-1]:,.0f} ev/s   rebuild {rebuilt[-1]:,.0f} ev/s", file=sys.stderr)
        raw_rate, rebuild_rate = statistics.median(raw), statistics.median(rebuilt)
        ratio = rebuild_rate / raw_rate
        print(f"\n{stored:,} EVENTS records, {args.rounds} round(s), medians")
        print(f"{'raw ordered replay (decode, no DB)':<40} {raw_rate:>10,.0f} events/s")
        print(f"{'headrace rebuild':<40} {rebuild_rate:>10,.0f} events/s")
        print(f"{'ratio':<40} {ratio:>10.0%}   goal >= {GOAL:.0%}  {'ok' if ratio >= GOAL else 'MISS'}")
    finally:
        steps.append(("database", database.drop()))
        steps.append(("nats-server", nats.stop()))
        await infra.clean_up(steps, tmp=tmp, keep=args.keep, say=lambda s: print(s, file=sys.stderr))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rebuild", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="EVENTS records to publish (default 1000000)")
    parser.add_argument("--rounds", type=int, default=1, help="raw replay + rebuild pairs (default 1)")
    parser.add_argument("--nats-sync", default="2m", help="nats-server sync_interval (default 2m)")
    parser.add_argument("--keep", action="store_true", help="keep the temp directory")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix=f"hr-bench-rebuild-{secrets.token_hex(3)}-"))
    return infra.run_main("bench.rebuild", amain(args, tmp), tmp=tmp, keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())

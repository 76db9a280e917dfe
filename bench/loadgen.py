"""The load generator: its own OS process (so it never shares a server's event loop), an
aiohttp client with a fixed number of keep-alive connections, driven by JSON lines on stdin;
each command answers one JSON line on stdout.

    {"op": "rate", "url": ..., "headers": {...}, "body": ..., "concurrency": 64,
     "warmup": 1.0, "seconds": 5.0}
        → closed loop for warmup + seconds; counts the responses completed in the measured
          window: {"count": 202s, "statuses": {...}, "seconds": ..., "rate": ..., "p50_ms", "p99_ms"}
    {"op": "burst", "url": ..., "headers": {...}, "body": ..., "concurrency": 64, "count": N}
        → N requests as fast as `concurrency` allows: {"ok": 202s, "statuses": {...}, "seconds": ...}
    {"op": "nats_burst", "nats": url, "count": N, "plugin": ..., "command": ..., "body": {"payload": ...}}
        → N `job.submit` commands published straight onto COMMANDS (cmd.job.<id>.submit, the
          envelope and Nats-Msg-Id the API's submit_job publishes), 256 PubAcks in flight:
          {"ok": acked, "statuses": {...}, "seconds": ...}
    {"op": "quit"}
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import aiohttp
import orjson


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


#: one keep-alive session per (url, concurrency), reused by later commands so that
#: alternating between two servers does not reopen connections every time
SESSIONS: dict[tuple[str, int], aiohttp.ClientSession] = {}


def _session(url: str, concurrency: int) -> aiohttp.ClientSession:
    key = (url, concurrency)
    if key not in SESSIONS:
        connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency, keepalive_timeout=300)
        SESSIONS[key] = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60))
    return SESSIONS[key]


def _request_parts(cmd: dict[str, Any]) -> tuple[str, dict[str, str], bytes]:
    headers = {"Content-Type": "application/json", **cmd.get("headers", {})}
    return cmd["url"], headers, orjson.dumps(cmd.get("body", {}))


async def rate(cmd: dict[str, Any]) -> dict[str, Any]:
    url, headers, body = _request_parts(cmd)
    concurrency = int(cmd.get("concurrency", 64))
    measuring = False
    stopping = False
    statuses: dict[str, int] = {}
    latencies: list[float] = []

    async def worker(session: aiohttp.ClientSession) -> None:
        while not stopping:
            started = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    status = str(resp.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                status = type(exc).__name__
                await asyncio.sleep(0.01)
            if measuring and not stopping:
                statuses[status] = statuses.get(status, 0) + 1
                latencies.append(time.perf_counter() - started)

    session = _session(url, concurrency)
    workers = [asyncio.create_task(worker(session)) for _ in range(concurrency)]
    await asyncio.sleep(float(cmd.get("warmup", 1.0)))
    measuring = True
    t0 = time.perf_counter()
    await asyncio.sleep(float(cmd["seconds"]))
    elapsed = time.perf_counter() - t0
    stopping = True
    await asyncio.gather(*workers)
    ok = statuses.get("202", 0)
    p50, p99 = _percentile(latencies, 0.5), _percentile(latencies, 0.99)
    return {
        "count": ok,
        "statuses": statuses,
        "seconds": elapsed,
        "rate": ok / elapsed,
        "p50_ms": p50 * 1000 if p50 is not None else None,
        "p99_ms": p99 * 1000 if p99 is not None else None,
    }


async def burst(cmd: dict[str, Any]) -> dict[str, Any]:
    url, headers, body = _request_parts(cmd)
    concurrency = int(cmd.get("concurrency", 64))
    remaining = int(cmd["count"])
    statuses: dict[str, int] = {}

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    status = str(resp.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                status = type(exc).__name__
            statuses[status] = statuses.get(status, 0) + 1

    session = _session(url, concurrency)
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return {"ok": statuses.get("202", 0), "statuses": statuses, "seconds": time.perf_counter() - t0}


async def nats_burst(cmd: dict[str, Any]) -> dict[str, Any]:
    import nats

    from services.core import envelope, subjects

    nc = await nats.connect(cmd["nats"], name="bench-loadgen", pending_size=64 * 1024 * 1024)
    try:
        js = nc.jetstream(timeout=30)
        payload = cmd.get("body", {}).get("payload", {})
        count = int(cmd["count"])
        t0 = time.perf_counter()
        acked = 0
        for low in range(0, count, 256):
            futures = []
            for _ in range(low, min(count, low + 256)):
                job_id = envelope.new_id()
                env = envelope.Envelope(
                    id=f"{job_id}:submit",
                    type="job.submit",
                    time=envelope.rfc3339(envelope.now()),
                    source="bench-loadgen",
                    job_id=job_id,
                    correlation_id=job_id,
                    data={
                        "plugin": cmd["plugin"],
                        "command": cmd["command"],
                        "payload": payload,
                        "submitted_by": "bench",
                    },
                )
                futures.append(
                    await js.publish_async(
                        subjects.job_command(job_id, "submit"), envelope.encode(env), headers={subjects.MSG_ID: env.id}
                    )
                )
            acked += len(await asyncio.gather(*futures))
        return {"ok": acked, "statuses": {"acked": acked}, "seconds": time.perf_counter() - t0}
    finally:
        await nc.close()


OPS = {"rate": rate, "burst": burst, "nats_burst": nats_burst}


async def serve() -> None:
    print(orjson.dumps({"ready": True}).decode(), flush=True)
    try:
        while True:
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line:
                return
            cmd = orjson.loads(line)
            if cmd.get("op") == "quit":
                return
            try:
                reply = await OPS[cmd["op"]](cmd)
            except Exception as exc:
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            sys.stdout.write(orjson.dumps(reply).decode() + "\n")
            sys.stdout.flush()
    finally:
        for session in SESSIONS.values():
            await session.close()


def main() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        asyncio.run(serve())
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve())


if __name__ == "__main__":
    main()

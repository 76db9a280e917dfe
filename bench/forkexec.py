"""The bare fork/exec rate of a protocol-2 plugin: spawn its entrypoint with the request
JSON on stdin, read stdout to EOF, wait for the exit, `concurrency` at a time, for
`seconds`; no NATS, no Postgres, no envelopes. Spawned the way the runner spawns it (own
session, the minimal plugin environment, the plugin directory as cwd) so the only
difference from Headrace is Headrace itself.

    python -m bench.forkexec --entrypoint plugins/echo/run.py --request-file req.json \
        --concurrency 2 --seconds 5

Prints one JSON line: {"count", "failed", "seconds" (concurrency-normalised busy time),
"wall", "rate" = count / seconds}.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path

import orjson

from services.core import config as config_mod


async def spawn_once(entrypoint: Path, request: bytes, env: dict[str, str]) -> bool:
    proc = await asyncio.create_subprocess_exec(
        str(entrypoint),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=str(entrypoint.parent),
        env=env,
        start_new_session=True,
    )
    stdout, _ = await proc.communicate(request)
    return proc.returncode == 0 and stdout.startswith(b"{")


async def measure(entrypoint: Path, request: bytes, *, concurrency: int, seconds: float, warmup: float) -> dict:
    """Closed loop of `concurrency` workers. Every spawn *started* inside the window counts
    (the last ones are waited for), and the rate is Little's law, concurrency * spawns / the
    sum of their durations: no ± one-spawn quantisation when a window holds only a few."""
    env = config_mod.plugin_base_env()
    window: tuple[float, float] = (float("inf"), float("inf"))
    durations: list[float] = []
    failed = 0

    async def worker() -> None:
        nonlocal failed
        while True:
            started = time.perf_counter()
            if started >= window[1]:
                return
            ok = await spawn_once(entrypoint, request, env)
            if window[0] <= started < window[1]:
                durations.append(time.perf_counter() - started)
                failed += not ok

    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    await asyncio.sleep(warmup)
    t0 = time.perf_counter()
    window = (t0, t0 + seconds)
    await asyncio.gather(*workers)
    count = len(durations) - failed
    busy = sum(durations) / concurrency  # seconds of the window's throughput
    return {
        "count": count,
        "failed": failed,
        "seconds": busy,
        "wall": time.perf_counter() - t0,
        "rate": count / busy if busy else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entrypoint", type=Path, required=True)
    parser.add_argument("--request-file", type=Path, required=True)
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    args = parser.parse_args()
    request = args.request_file.read_bytes()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        result = asyncio.run(
            measure(
                args.entrypoint.resolve(),
                request,
                concurrency=args.concurrency,
                seconds=args.seconds,
                warmup=args.warmup,
            )
        )
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = runner.run(
                measure(
                    args.entrypoint.resolve(),
                    request,
                    concurrency=args.concurrency,
                    seconds=args.seconds,
                    warmup=args.warmup,
                )
            )
    print(orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    main()

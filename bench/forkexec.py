"""The bare fork/exec rate of a protocol-2 plugin: spawn its entrypoint with the request
JSON on stdin, read stdout and stderr to EOF, wait for the exit, `concurrency` at a time, for
`seconds`; no NATS, no Postgres, no envelopes, no event loop. Spawned the way the runner spawns
it, so the only difference from Headrace is Headrace itself: the entrypoint exec'd directly (its
shebang resolves the interpreter through the same PATH), the minimal plugin environment, the
plugin directory as cwd, its own session, all three standard streams piped, and — when this
process is root, like the runner — as the user the runner drops to (`privileges.resolve`: its
uid and gid, no supplementary groups, its HOME/USER/LOGNAME). The drop is done by the stdlib's
C child setup, with no extra exec in front.

    python -m bench.forkexec --entrypoint plugins/echo/run.py --request-file req.json \
        --concurrency 2 --seconds 5

Prints one JSON line: {"count", "failed", "seconds" (the measuring window), "wall", "rate" =
count / seconds, "user", "spawns", "child_cpu_ms"}: spawns that *finished* inside the window over
its wall-clock length, a closed loop of `concurrency` workers, the way jobs/s is measured on
Headrace's side; `child_cpu_ms` is the CPU one spawn costs (the plugin's processes, from
RUSAGE_CHILDREN over all `spawns`, warm-up included).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from services.core import config as config_mod
from services.runner import privileges


def spawn_kwargs(entrypoint: Path, plugin_user: str | None) -> tuple[dict[str, Any], str | None]:
    """subprocess.run arguments matching the runner's spawn of `entrypoint`, and the user's name."""
    env = config_mod.plugin_base_env()
    kwargs: dict[str, Any] = {"cwd": str(entrypoint.parent), "start_new_session": True}
    user = privileges.resolve(plugin_user)
    if user is not None:
        env = user.env(env)
        kwargs.update(user=user.uid, group=user.gid, extra_groups=[])
    kwargs["env"] = env
    return kwargs, user.name if user is not None else None


def measure(
    entrypoint: Path, request: bytes, *, concurrency: int, seconds: float, warmup: float, plugin_user: str | None = None
) -> dict[str, Any]:
    kwargs, user = spawn_kwargs(entrypoint, plugin_user)
    argv = [str(entrypoint)]
    start = time.perf_counter() + warmup
    end = start + seconds
    lock = threading.Lock()
    count = failed = spawns = 0
    children = resource.getrusage(resource.RUSAGE_CHILDREN)

    def worker() -> None:
        nonlocal count, failed, spawns
        while time.perf_counter() < end:
            proc = subprocess.run(argv, input=request, capture_output=True, check=False, **kwargs)
            finished = time.perf_counter()
            with lock:
                spawns += 1
                if start <= finished < end:
                    if proc.returncode == 0 and proc.stdout.startswith(b"{"):
                        count += 1
                    else:
                        failed += 1

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    child_cpu = used.ru_utime + used.ru_stime - children.ru_utime - children.ru_stime
    return {
        "count": count,
        "failed": failed,
        "seconds": seconds,
        "wall": time.perf_counter() - start,
        "rate": count / seconds,
        "user": user,
        "spawns": spawns,
        "child_cpu_ms": 1000 * child_cpu / spawns if spawns else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entrypoint", type=Path, required=True)
    parser.add_argument("--request-file", type=Path, required=True)
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--plugin-user", default=None, help="service.plugin_user of the runner (default: its default)")
    args = parser.parse_args()
    result = measure(
        args.entrypoint.resolve(),
        args.request_file.read_bytes(),
        concurrency=args.concurrency,
        seconds=args.seconds,
        warmup=args.warmup,
        plugin_user=args.plugin_user,
    )
    print(orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    main()

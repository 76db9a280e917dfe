"""The peers' load process (runs in the peers venv): JSON lines on stdin, one JSON line answer
each on stdout, like bench/loadgen.py does for Headrace.

    {"op": "burst", "system": "celery"|"dramatiq", "count": N, "timeout": 120}
        → submit N no-op jobs as fast as one client can, then poll the workers' INCR counter
          until all N are done: {"ok", "seconds" (first submit → last done), "submit_seconds"}
    {"op": "rtt", "system": "celery"|"dramatiq", "count": N}
        → N sync round trips one after another (Celery `apply_async().get()`, Dramatiq
          `send().get_result(block=True)`): {"samples": [seconds, ...]}
    {"op": "quit"}
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from typing import Any

MESSAGE = "bench"


def _module(system: str) -> Any:
    return importlib.import_module(f"bench.peer_{system}")


def burst(cmd: dict[str, Any]) -> dict[str, Any]:
    mod = _module(cmd["system"])
    count = int(cmd["count"])
    import redis

    client = redis.Redis.from_url(mod.URL)
    before = int(client.get(mod.DONE_KEY) or 0)
    target = before + count
    started = time.perf_counter()
    if cmd["system"] == "celery":
        for _ in range(count):
            mod.noop.apply_async((MESSAGE,))
    else:
        for _ in range(count):
            mod.noop.send(MESSAGE)
    submitted = time.perf_counter() - started
    deadline = started + float(cmd.get("timeout", 120))
    done = before
    while time.perf_counter() < deadline:
        done = int(client.get(mod.DONE_KEY) or 0)
        if done >= target:
            break
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    return {"ok": done - before, "seconds": elapsed, "submit_seconds": submitted, "complete": done >= target}


def rtt(cmd: dict[str, Any]) -> dict[str, Any]:
    mod = _module(cmd["system"])
    samples = []
    for _ in range(int(cmd["count"])):
        started = time.perf_counter()
        if cmd["system"] == "celery":
            result = mod.noop_result.apply_async((MESSAGE,)).get(timeout=10)
        else:
            result = mod.noop_result.send(MESSAGE).get_result(block=True, timeout=10_000)
        samples.append(time.perf_counter() - started)
        if result != MESSAGE:
            raise RuntimeError(f"{cmd['system']} answered {result!r}")
    return {"samples": samples}


OPS = {"burst": burst, "rtt": rtt}


def main() -> None:
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("op") == "quit":
            return
        try:
            reply = OPS[cmd["op"]](cmd)
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()

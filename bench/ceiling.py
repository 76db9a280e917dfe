"""The raw ceiling of an accept endpoint: a bare aiohttp app whose one handler parses the
JSON body, publishes one message to a JetStream stream with a Nats-Msg-Id header, awaits
the PubAck and answers 202. Same event loop (uvloop), same NATS client settings and the
same nats-server as the Headrace API, nothing else (no auth, no catalog, no envelope).

    python -m bench.ceiling --port 8081 --nats nats://127.0.0.1:4222

Prints `ready <port>` once it listens; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import uuid

import nats
import nats.js.errors
import orjson
from aiohttp import web
from nats.js import api

STREAM = "BENCH_CEILING"
SUBJECT = "bench.ceiling.accept"


async def serve(port: int, nats_url: str) -> None:
    nc = await nats.connect(nats_url, name="bench-ceiling", pending_size=64 * 1024 * 1024)
    js = nc.jetstream(timeout=10)
    config = api.StreamConfig(
        name=STREAM,
        subjects=["bench.ceiling.>"],
        storage=api.StorageType.FILE,
        retention=api.RetentionPolicy.LIMITS,
        duplicate_window=120.0,
        num_replicas=1,
    )
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError:
        await js.update_stream(config)

    async def accept(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        msg_id = uuid.uuid4().hex
        await js.publish(SUBJECT, orjson.dumps({"id": msg_id, "data": body}), headers={"Nats-Msg-Id": msg_id})
        return web.Response(
            status=202, body=orjson.dumps({"job_id": msg_id, "status": "queued"}), content_type="application/json"
        )

    app = web.Application()
    app.router.add_post("/plugin/{plugin}/{command}", accept)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024, reuse_address=True)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"ready {port}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--nats", required=True)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        asyncio.run(serve(args.port, args.nats))
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve(args.port, args.nats))


if __name__ == "__main__":
    main()

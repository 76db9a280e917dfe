"""`headrace tail`: the live event log (GET /events, server-sent events), one line per event, until
Ctrl-C (or SIGTERM), which ends it cleanly with exit code 0.

By default it reads `format=log` (the envelopes as stored, from what happens after it connects);
`--ductile` reads Ductile's hub events instead (which start with a replay of the last 256).
`--type` and `--job` are the stream's own `type` and `job_id` filters; `--after SEQ` resumes right
after a stream sequence (Last-Event-ID). `--json`: one JSON object per line,
`{"id": seq, "event": name, "data": {...}}`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import Any

import aiohttp
import orjson
from rich.console import Console
from rich.text import Text

from services.cli_client import output, sse
from services.cli_client.connection import ClientError
from services.cli_client.http import Api

#: keys of an event's data shown after its type, in this order (the rest only with --json)
SUMMARY_KEYS = ("plugin", "command", "status", "attempt", "duration_ms", "error", "reason", "pipeline", "step_id")


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    tail = sub.add_parser("tail", parents=[common], help="follow the live event stream (GET /events) until Ctrl-C")
    tail.add_argument("--type", help="one event type (job.succeeded) or a family (job. or job.*)")
    tail.add_argument("--job", help="only this job's events")
    tail.add_argument("--after", type=int, help="start right after this stream sequence (resume)")
    tail.add_argument("--ductile", action="store_true", help="Ductile's hub event names (replays the last 256 first)")
    tail.set_defaults(verb=run)


def _fields(name: str, data: dict[str, Any]) -> tuple[str | None, str | None, dict[str, Any]]:
    """(time, job id, the summary keys) of an event as either format sends it."""
    if "type" in data and "data" in data and isinstance(data["data"], dict):  # an envelope (format=log)
        return data.get("time"), data.get("job_id"), data["data"]
    return data.get("at"), data.get("job_id"), data


def line(seq: str | None, name: str, data: Any) -> Text:
    """One event as one line: time, sequence, type, job id, then its summary keys."""
    if not isinstance(data, dict):
        return Text(f"{seq or '-':>7}  {name}  {output.compact(data)}")
    time, job_id, fields = _fields(name, data)
    text = Text()
    text.append(output.clock(time) + " ", style="dim")
    text.append(f"{seq or '-':>7} ", style="dim")
    style = (
        "red"
        if name.endswith(("failed", "dead", "timed_out"))
        else "green"
        if name.endswith(("succeeded", "completed"))
        else "cyan"
    )
    text.append(f"{name:<22}", style=style)
    if job_id:
        text.append(f" {job_id}")
    for key in SUMMARY_KEYS:
        value = fields.get(key)
        if value is None or value == "":
            continue
        if key == "duration_ms" and isinstance(value, int | float):
            key, shown = "took", output.millis(value)
        else:
            shown = output.compact(value, 60)
        text.append(f" {key}=", style="dim")
        text.append(shown)
    return text


async def _follow(args: argparse.Namespace, api: Api, con: Console) -> None:
    params: dict[str, str | int | None] = {
        "type": args.type,
        "job_id": args.job,
        "last_event_id": args.after,
        "format": None if args.ductile else "log",
    }
    async with api.stream("/events", params) as resp:
        # the API subscribes before it answers: from here on no event is missed (stderr keeps --json clean)
        print(f"following {api.target.url}/events (Ctrl-C to stop)", file=sys.stderr, flush=True)
        try:
            async for event in sse.events(resp):
                try:
                    data: Any = orjson.loads(event.data)
                except orjson.JSONDecodeError:
                    data = event.data
                if args.json:
                    output.print_json_line({"id": event.id, "event": event.event, "data": data})
                else:
                    con.print(line(event.id, event.event, data))
                    con.file.flush()
        except (aiohttp.ClientError, OSError) as exc:
            raise ClientError(
                f"the event stream from {api.target.url} broke: {str(exc) or type(exc).__name__}"
            ) from None


async def run(args: argparse.Namespace, api: Api, con: Console) -> int:
    """Follow until the stream ends or a signal says stop (both exit 0; a lost API is an error)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    handled: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError, RuntimeError):  # not the main thread: Ctrl-C stays KeyboardInterrupt
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
    follow = asyncio.ensure_future(_follow(args, api, con))
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({follow, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (follow, stopped):
            task.cancel()
        for sig in handled:
            loop.remove_signal_handler(sig)
    if follow.done() and not follow.cancelled():
        follow.result()  # the stream ended by itself, or failed: its ClientError is the answer
    else:
        with contextlib.suppress(asyncio.CancelledError):
            await follow
    return 0

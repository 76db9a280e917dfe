"""Server-sent events read off an aiohttp response, as the WHATWG EventSource parses them:
`field: value` lines, a blank line ends an event, `:` lines are comments (heartbeats), several
`data:` lines join with newlines, and a missing `event:` means "message"."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import aiohttp


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    id: str | None
    event: str
    data: str


async def _lines(resp: aiohttp.ClientResponse) -> AsyncIterator[str]:
    """The stream's lines, however long (aiohttp's own readline refuses a line over 128 KiB)."""
    pending = b""
    async for chunk in resp.content.iter_any():
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for raw in complete:
            yield raw.decode("utf-8", "replace").removesuffix("\r")
    if pending:
        yield pending.decode("utf-8", "replace").removesuffix("\r")


async def events(resp: aiohttp.ClientResponse) -> AsyncIterator[Event]:
    """Each event of the stream until it ends."""
    last_id: str | None = None
    name = ""
    data: list[str] = []
    async for line in _lines(resp):
        if line == "":
            if data:
                yield Event(id=last_id, event=name or "message", data="\n".join(data))
            name, data = "", []
            continue
        if line.startswith(":"):
            continue
        field, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value
        elif field == "id" and "\x00" not in value:
            last_id = value

"""How the verbs print: rich tables and colour on a terminal, plain text when piped (no colour when
stdout is not a TTY or NO_COLOR is set), and `--json`: the API's JSON, indented, for scripts."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TextIO

import orjson
from rich.console import Console
from rich.text import Text

#: width of piped output (no terminal to measure): wide enough that no id or timestamp is cut
PIPE_WIDTH = 200

STATUS_STYLES = {
    "succeeded": "green",
    "running": "cyan",
    "queued": "yellow",
    "failed": "red",
    "timed_out": "red",
    "dead": "bold red",
    "cancelled": "magenta",
    "skipped": "dim",
}
MARK_STYLES = {"ok": "bold green", "warn": "bold yellow", "fail": "bold red"}


def console(env: Mapping[str, str], file: TextIO | None = None) -> Console:
    """A Console on stdout: colour only on a terminal and without NO_COLOR; piped, a fixed wide line."""
    out = file if file is not None else sys.stdout
    terminal = out.isatty()
    width = None
    if not terminal:
        columns = env.get("COLUMNS", "")
        width = int(columns) if columns.isdigit() and int(columns) > 0 else PIPE_WIDTH
    return Console(
        file=out,
        no_color=env.get("NO_COLOR", "") != "",
        color_system="auto" if terminal else None,
        width=width,
        highlight=False,
        emoji=False,
        soft_wrap=False,
    )


def print_json(value: Any, file: TextIO | None = None) -> None:
    """`--json`: the API's JSON, indented (one document per call)."""
    out = file if file is not None else sys.stdout
    out.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")
    out.flush()


def print_json_line(value: Any, file: TextIO | None = None) -> None:
    """One JSON document per line (a stream's events)."""
    out = file if file is not None else sys.stdout
    out.write(orjson.dumps(value).decode() + "\n")
    out.flush()


def status(value: str | None) -> Text:
    text = value or "-"
    return Text(text, style=STATUS_STYLES.get(text, ""))


def mark(value: str) -> Text:
    return Text(value, style=MARK_STYLES.get(value, ""))


def _parse(ts: str | None) -> datetime | None:
    if not ts:
        return None
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None


def when(ts: str | None) -> str:
    """An API timestamp shown to the second, UTC: `2026-01-02 03:04:05Z`; `-` when none."""
    parsed = _parse(ts)
    if parsed is None:
        return ts or "-"
    return parsed.strftime("%Y-%m-%d %H:%M:%SZ")


def clock(ts: str | None) -> str:
    """The time of day of an API timestamp, to the millisecond (for one line per event)."""
    parsed = _parse(ts)
    return parsed.strftime("%H:%M:%S.%f")[:-3] if parsed is not None else (ts or "-")


def millis(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}ms" if value < 1000 else f"{value / 1000:.1f}s"


def duration(start: str | None, end: str | None) -> str:
    """How long from `start` to `end` (API timestamps), `-` if either is missing."""
    a, b = _parse(start), _parse(end)
    if a is None or b is None:
        return "-"
    return millis((b - a).total_seconds() * 1000)


def compact(value: Any, limit: int = 80) -> str:
    """A value on one line: strings as they are, anything else as JSON; cut at `limit` characters."""
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"

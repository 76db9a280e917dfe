"""Circuit breaker per plugin command: opens after `threshold` consecutive failed attempts,
skips new jobs while open, lets one job through (half-open) after `reset_after_s`, and
closes on its success. Pure state transitions; the dispatcher persists them in KV.

Only what the plugin did counts: an attempt recorded as lost (its runner died mid-run,
services/runner/preflight.py) says nothing about the plugin and leaves the breaker as it is.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any


@dataclasses.dataclass(slots=True)
class BreakerState:
    failures: int = 0
    #: "closed", "open" or "half_open"
    state: str = "closed"
    opened_at: float | None = None

    def to_dict(self) -> dict[str, object]:
        return {"failures": self.failures, "state": self.state, "opened_at": self.opened_at}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> BreakerState:
        opened = raw.get("opened_at")
        return cls(
            failures=int(raw.get("failures", 0) or 0),
            state=str(raw.get("state", "closed")),
            opened_at=float(opened) if isinstance(opened, int | float) else None,
        )


def admit(breaker: BreakerState, *, reset_after_s: float, now: float | None = None) -> tuple[bool, BreakerState]:
    """May a new job run? Returns (admitted, new state); an expired open breaker goes half-open."""
    now = time.time() if now is None else now
    if breaker.state == "closed":
        return True, breaker
    if breaker.state == "open" and breaker.opened_at is not None and now - breaker.opened_at >= reset_after_s:
        return True, dataclasses.replace(breaker, state="half_open")
    return False, breaker


def verdict(event_type: str, data: dict[str, object]) -> bool | None:
    """Did this outcome event show the plugin command working (True) or failing (False)? None when
    it is not the plugin's doing: a lost attempt, or an event that is no attempt outcome."""
    if data.get("lost") is True:
        return None
    if event_type == "job.succeeded":
        return True
    if event_type in ("job.failed", "job.timed_out"):
        return False
    return None


def record(breaker: BreakerState, *, succeeded: bool, threshold: int, now: float | None = None) -> BreakerState:
    """The state after an attempt's outcome."""
    now = time.time() if now is None else now
    if succeeded:
        return BreakerState()
    failures = breaker.failures + 1
    if breaker.state == "half_open" or failures >= threshold:
        return BreakerState(failures=failures, state="open", opened_at=now)
    return BreakerState(failures=failures, state=breaker.state, opened_at=breaker.opened_at)


def key(plugin: str, command: str) -> str:
    return f"{plugin}.{command}"

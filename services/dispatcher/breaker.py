"""Circuit breaker per plugin command: opens after `threshold` consecutive failed attempts,
skips new jobs while open, lets one job through (half-open) after `reset_after_s`, and
closes on its success. Pure state transitions; the dispatcher persists them in KV.
"""

from __future__ import annotations

import dataclasses
import time


@dataclasses.dataclass(slots=True)
class BreakerState:
    failures: int = 0
    #: "closed", "open" or "half_open"
    state: str = "closed"
    opened_at: float | None = None

    def to_dict(self) -> dict[str, object]:
        return {"failures": self.failures, "state": self.state, "opened_at": self.opened_at}

    @classmethod
    def from_dict(cls, raw: dict[str, object]) -> BreakerState:
        opened = raw.get("opened_at")
        return cls(failures=int(raw.get("failures", 0) or 0), state=str(raw.get("state", "closed")),
                   opened_at=float(opened) if isinstance(opened, int | float) else None)


def admit(breaker: BreakerState, *, reset_after_s: float, now: float | None = None) -> tuple[bool, BreakerState]:
    """May a new job run? Returns (admitted, new state); an expired open breaker goes half-open."""
    now = time.time() if now is None else now
    if breaker.state == "closed":
        return True, breaker
    if breaker.state == "open" and breaker.opened_at is not None and now - breaker.opened_at >= reset_after_s:
        return True, dataclasses.replace(breaker, state="half_open")
    return False, breaker


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

"""The chaos run's one-line summaries, printed in pytest's terminal summary (so `make test`
shows jobs, kills, lost and doubled whether the run passed or not)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

SUMMARIES: list[str] = []


@pytest.fixture
def chaos_summary() -> Callable[[str], None]:
    return SUMMARIES.append


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SUMMARIES:
        terminalreporter.section("chaos")
        for line in SUMMARIES:
            terminalreporter.write_line(line)

"""`headrace check-config` (a process) catches what `up` would trip on, in one message each, naming
file, line and key; and passes a Ductile-style file with an unquoted `on:`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.stack import REPO

ROOTS = f"plugin_roots: ['{REPO / 'plugins'}']\n"


def check(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "config.yaml"
    path.write_text(ROOTS + text)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "-c", str(path), "check-config"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=str(REPO),
    )


def test_an_unquoted_on_pipeline_passes(tmp_path: Path) -> None:
    done = check(tmp_path, "pipelines:\n  - name: p\n    on: echo.poll\n    steps:\n      - uses: echo\n")
    assert done.returncode == 0 and done.stderr == "", done.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "pipelines:\n  - name: a\n    on: x\n    steps:\n      - call: missing\n",
            "pipelines.a.steps[0].call: unknown pipeline 'missing'",
        ),
        (
            "pipelines:\n  - name: a\n    on: x\n    steps:\n      - uses: ghost\n",
            "pipelines.a.steps[0].uses: unknown plugin 'ghost'",
        ),
        (
            "pipelines:\n  - name: a\n    on: x\n    steps:\n      - uses: echo.nope\n",
            "plugin 'echo' has no command 'nope'",
        ),
        (
            "plugins:\n  ghost:\n    schedules:\n      - every: 5m\n",
            "plugins.ghost.schedules[0]: unknown plugin 'ghost'",
        ),
        ("plugins:\n  echo:\n    schedules:\n      - {every: 5m, command: nope}\n", "has no command 'nope'"),
        (
            "plugins:\n  echo:\n    retry:\n      max_attempts: many\n",
            "config.yaml:5: plugins.echo.retry.max_attempts: must be of type integer",
        ),
        (
            "service:\n  name: ${HR_SURELY_UNSET_VAR}\n",
            "config.yaml:3: service.name: environment variable ${HR_SURELY_UNSET_VAR} is not set",
        ),
    ],
)
def test_what_up_would_trip_on_is_one_message(tmp_path: Path, text: str, message: str) -> None:
    done = check(tmp_path, text)
    assert done.returncode == 1, done.stdout
    assert done.stderr.count(message) == 1, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_warnings_are_printed_once_and_the_check_passes(tmp_path: Path) -> None:
    done = check(
        tmp_path, "service:\n  tick_interval: 60s\nagents:\n  a:\n    llm: {provider: echo}\n    tools: [ghost.run]\n"
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert sum(line.startswith("headrace: warning: service.tick_interval:") for line in lines) == 1
    assert (
        sum(line.startswith("headrace: warning: agents.a: tool 'ghost.run': no plugin 'ghost'") for line in lines) == 1
    )


def test_a_plugin_entry_without_enabled_is_named_in_one_warning(tmp_path: Path) -> None:
    """Ductile leaves such a plugin off (Go's zero value); Headrace runs it, and says so (§5.5)."""
    done = check(tmp_path, "plugins:\n  echo:\n    config: {}\n  echo_py:\n    enabled: false\n")
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if ".enabled:" in line]
    assert lines == [
        "headrace: warning: plugins.echo.enabled: not set, so Headrace runs plugin 'echo' "
        "(Ductile leaves a plugin without `enabled: true` off); set enabled: true or false"
    ], done.stderr

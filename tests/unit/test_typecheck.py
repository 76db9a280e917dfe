"""mypy over services/ at the level pyproject.toml's [tool.mypy] sets (strict), so `make test` fails on a
type error as it does on a failing test. Runs mypy as a subprocess with the project's own config; its
incremental cache is the repository's .mypy_cache (a cold run takes about 10 s on 2 cores)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_services_type_check_clean() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert done.returncode == 0, f"mypy failed (exit {done.returncode}):\n{done.stdout}{done.stderr}"
    assert "Success: no issues found" in done.stdout, done.stdout

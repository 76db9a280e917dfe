"""Shared by the Ductile plugin conformance tests: where the fixtures and the test plugins live."""

from __future__ import annotations

from pathlib import Path

from tests.support.stack import REPO, TEST_PLUGINS


def _fixtures() -> Path:
    """`shared/fixtures/ductile` next to the checkout (../shared from the main tree, ../../shared from a worktree)."""
    for parent in REPO.parents:
        candidate = parent / "shared" / "fixtures" / "ductile"
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("shared/fixtures/ductile not found above " + str(REPO))


#: Ductile's real plugin manifests, verbatim (never edited; tests load them as they are)
FIXTURE_MANIFESTS = _fixtures() / "manifests"
#: this suite's own protocol-2 plugins (mimic, needs_config)
PLUGINS = Path(__file__).resolve().parent / "plugins"
ROOTS = [str(REPO / "plugins"), str(TEST_PLUGINS), str(PLUGINS)]

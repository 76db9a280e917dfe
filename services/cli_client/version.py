"""`headrace --version`: the installed package's version (importlib.metadata)."""

from __future__ import annotations

from importlib import metadata

#: what a source checkout that was never installed reports
UNINSTALLED = "0.0.0+local"


def version() -> str:
    try:
        return metadata.version("headrace")
    except metadata.PackageNotFoundError:
        return UNINSTALLED

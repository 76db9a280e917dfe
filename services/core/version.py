"""The installed package's version (importlib.metadata): `headrace --version`, the API's discovery, OpenAPI
documents and /healthz, and the /healthz of a service run alone."""

from __future__ import annotations

from importlib import metadata

#: what a source checkout that was never installed reports
UNINSTALLED = "0.0.0+local"


def version() -> str:
    try:
        return metadata.version("headrace")
    except metadata.PackageNotFoundError:
        return UNINSTALLED

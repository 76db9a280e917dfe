"""py_inproc: a protocol-python plugin reporting what environment the runner process lets it see."""

from __future__ import annotations

import os
from typing import Any


async def run(request: dict[str, Any]) -> dict[str, Any]:
    try:
        with open("/proc/self/environ", "rb") as f:
            proc = f.read().decode("utf-8", "replace").split("\0")
    except OSError:
        proc = []
    return {
        "status": "ok",
        "result": {
            "environ": dict(os.environ),
            "proc_environ": [p for p in proc if p],
            "secret_keys": sorted(request.get("secrets") or {}),
        },
    }

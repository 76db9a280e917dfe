"""Named SQL queries of the projector (`-- name: x` blocks of queries.sql), loaded once."""

from __future__ import annotations

import re
from pathlib import Path


def _load(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    for block in re.split(r"^-- name: ", path.read_text(), flags=re.MULTILINE)[1:]:
        name, _, body = block.partition("\n")
        lines = [line for line in body.splitlines() if not line.startswith("--")]
        queries[name.strip()] = "\n".join(lines).strip().rstrip(";")
    return queries


queries = _load(Path(__file__).with_name("queries.sql"))

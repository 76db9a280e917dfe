"""Named SQL queries of the projector (`-- name: x` blocks of queries.sql), loaded once."""

from __future__ import annotations

import re

from services.core import resources


def _load(text: str) -> dict[str, str]:
    queries: dict[str, str] = {}
    for block in re.split(r"^-- name: ", text, flags=re.MULTILINE)[1:]:
        name, _, body = block.partition("\n")
        lines = [line for line in body.splitlines() if not line.startswith("--")]
        queries[name.strip()] = "\n".join(lines).strip().rstrip(";")
    return queries


queries = _load(resources.projector_sql("queries.sql"))

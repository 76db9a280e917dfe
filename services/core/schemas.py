"""Load and compile the JSON Schemas of `schemas/` once; validate documents against them."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import orjson

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"


@functools.cache
def validator(name: str) -> jsonschema.protocols.Validator:
    """The compiled validator of `schemas/<name>.json` (e.g. "config", "events/job.queued")."""
    schema = orjson.loads((SCHEMA_DIR / f"{name}.json").read_bytes())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def error_path(error: jsonschema.ValidationError) -> str:
    """A dotted path to where a validation error sits, e.g. `plugins.echo.parallelism`."""
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "(root)"


def violations(name: str, document: Any) -> list[str]:
    """Every violation of schema `name` by `document`, as `path: message` lines (empty = valid)."""
    errors = sorted(validator(name).iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{error_path(e)}: {e.message}" for e in errors]


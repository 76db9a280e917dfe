"""Load and compile the JSON Schemas of `schemas/` once; validate documents against them."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

import jsonschema
import orjson

from services.core import resources

SCHEMA_DIR = resources.bundled("schemas")


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


def violations(name: str, document: Any, *, values: bool = True) -> list[str]:
    """Every violation of schema `name` by `document`, as `path: message` lines (empty = valid).

    `values=False` names the path (`api.auth.tokens[5].token`) and the rule, never the offending value:
    for documents whose values may be secrets (the config, after `${VAR}` substitution)."""
    errors = sorted(validator(name).iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    if values:
        return [f"{error_path(e)}: {e.message}" for e in errors]
    return [f"{indexed_path(e)}: {rule(e)}" for e in errors]


def indexed_path(error: jsonschema.ValidationError) -> str:
    """`api.auth.tokens[5].token`: keys dotted, array indices in brackets."""
    out = ""
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"


def _plural(n: Any, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


#: the rule each keyword states, from the schema's side only (what the document held is never shown)
_RULES: dict[str, Any] = {
    "type": lambda v: "must be " + (" or ".join(v) if isinstance(v, list) else f"of type {v}"),
    "minLength": lambda v: f"is too short (minimum {_plural(v, 'character')})",
    "maxLength": lambda v: f"is too long (maximum {_plural(v, 'character')})",
    "pattern": lambda v: f"does not match the pattern {v}",
    "format": lambda v: f"is not a valid {v}",
    "enum": lambda v: "must be one of " + ", ".join(map(repr, v)),
    "const": lambda v: f"must be {v!r}",
    "minimum": lambda v: f"must be at least {v}",
    "maximum": lambda v: f"must be at most {v}",
    "exclusiveMinimum": lambda v: f"must be greater than {v}",
    "exclusiveMaximum": lambda v: f"must be less than {v}",
    "multipleOf": lambda v: f"must be a multiple of {v}",
    "minItems": lambda v: f"needs at least {_plural(v, 'item')}",
    "maxItems": lambda v: f"takes at most {_plural(v, 'item')}",
    "uniqueItems": lambda v: "must not repeat an item",
    "minProperties": lambda v: f"needs at least {_plural(v, 'key')}",
    "maxProperties": lambda v: f"takes at most {_plural(v, 'key')}",
    "anyOf": lambda v: "matches none of the allowed forms",
    "oneOf": lambda v: "must match exactly one of the allowed forms",
    "not": lambda v: "is not allowed here",
}


def rule(error: jsonschema.ValidationError) -> str:
    """What `error` breaks, stated without the offending value. Key names (not values) are kept:
    `required` and `additionalProperties` name keys, which is what a reader must fix."""
    keyword, expected = error.validator, error.validator_value
    # the schema a keyword sits in is an object (a boolean schema has no keywords)
    schema: Mapping[str, Any] = error.schema if isinstance(error.schema, Mapping) else {}
    if keyword == "required":
        instance = error.instance if isinstance(error.instance, dict) else {}
        missing = [k for k in expected if k not in instance] if isinstance(expected, list) else []
        return "missing required key " + ", ".join(map(repr, missing))
    if keyword == "additionalProperties":
        instance = error.instance if isinstance(error.instance, dict) else {}
        known = set(schema.get("properties") or {})
        patterns = schema.get("patternProperties") or {}
        extra = [k for k in instance if k not in known and not any(re.search(p, k) for p in patterns)]
        return "unknown key " + ", ".join(map(repr, extra)) if extra else "has a key that is not allowed"
    if keyword == "propertyNames":
        return "has a key that is not allowed (" + _describe_schema(expected) + ")"
    if keyword in ("anyOf", "oneOf") and isinstance(schema.get("title"), str):
        return f"must be {schema['title']}"
    describe = _RULES.get(str(keyword))
    return describe(expected) if describe else f"breaks the {keyword!r} rule"


def _describe_schema(schema: Any) -> str:
    if isinstance(schema, dict) and "pattern" in schema:
        return f"keys must match {schema['pattern']}"
    return "see schemas/"

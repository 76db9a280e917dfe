"""Limits on the JSON values Headrace accepts, and how the read models hold what Postgres cannot.

Two jobs, one module, because both are about what a JSON value may contain:

* `problem(value)` — the limits every value must meet where it enters (API and webhook bodies,
  ingest events, plugin and LLM responses): nesting at most `MAX_DEPTH` levels, integers within
  64 bits, finite floats, string keys, no lone surrogates. `problem_in_json(raw, value)` also finds
  integers that a JSON parser would have turned into floats. Past the entrance everything fits the
  wire encoder (orjson refuses 255 levels, integers beyond 64 bits and lone surrogates).
* `for_postgres(value)` — the one substitution from event data to read-model rows: Postgres text
  and jsonb cannot hold U+0000 or a lone surrogate, so each such code point in a string or key
  becomes U+FFFD. The event log keeps the exact data; only rows (and GET /job/{id} read from the log
  when the row is not there yet) show the substitute.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any

from services.core.envelope import Envelope

#: nesting levels a value may have (an object or array is one level; scalars none). Well under the
#: 255 of the wire encoder, which wraps a payload in a few more levels (envelope, data, event).
MAX_DEPTH = 64
INT_MIN = -(2**63)
#: the largest integer the wire encoder writes (unsigned 64 bit)
INT_MAX = 2**64 - 1
#: what the read models show in place of a code point Postgres text cannot hold
SUBSTITUTE = "\ufffd"

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
# orjson turns an integer literal beyond 64 bits into a float, so only a float this large can be one
_FLOAT_MAY_BE_BIG_INT = float(2**63)


def problem(value: Any, *, max_depth: int = MAX_DEPTH) -> str | None:
    """Why `value` cannot be accepted, or None. Walks iteratively (any depth is safe to inspect)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return "a string contains a lone surrogate (not valid Unicode)"
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not INT_MIN <= item <= INT_MAX:
                return f"an integer is outside the 64-bit range ({INT_MIN} … {INT_MAX})"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return "a number is NaN or infinite (not JSON)"
        elif isinstance(item, dict):
            if depth + 1 > max_depth:
                return f"nested deeper than {max_depth} levels"
            for key, child in item.items():
                if not isinstance(key, str):
                    return f"an object key is not a string ({type(key).__name__})"
                if _SURROGATE.search(key):
                    return "an object key contains a lone surrogate (not valid Unicode)"
                stack.append((child, depth + 1))
        elif isinstance(item, list | tuple):
            if depth + 1 > max_depth:
                return f"nested deeper than {max_depth} levels"
            stack.extend((child, depth + 1) for child in item)
    return None


def _has_big_float(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and abs(item) >= _FLOAT_MAY_BE_BIG_INT:
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _checked_int(literal: str) -> int:
    number = int(literal)
    if not INT_MIN <= number <= INT_MAX:
        raise OverflowError(literal)
    return number


def problem_in_json(raw: bytes | str, value: Any, *, max_depth: int = MAX_DEPTH) -> str | None:
    """`problem(value)` for `value` parsed from `raw`, plus integer literals in `raw` beyond 64 bits
    (which the parser silently made floats). `raw` is re-read only when a float that large exists."""
    found = problem(value, max_depth=max_depth)
    if found is not None or not _has_big_float(value):
        return found
    try:
        json.loads(raw, parse_int=_checked_int)
    except OverflowError:
        return f"an integer is outside the 64-bit range ({INT_MIN} … {INT_MAX})"
    except ValueError:
        return None  # already parsed once; nothing more to say
    return None


def encodable_text(text: str) -> str:
    """`text` with every lone surrogate (which the wire encoder refuses) replaced by U+FFFD."""
    return _SURROGATE.sub(SUBSTITUTE, text) if _SURROGATE.search(text) else text


def storable_text(text: str) -> str:
    """`text` with every U+0000 and lone surrogate replaced by U+FFFD."""
    return _UNSTORABLE.sub(SUBSTITUTE, text)


def for_postgres(value: Any) -> Any:
    """`value` with `storable_text` applied to every string and key (the same object when nothing changes).
    Keys that become equal after the substitution collapse into one, the later one winning."""
    if isinstance(value, str):
        return storable_text(value) if _UNSTORABLE.search(value) else value
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        changed = False
        for key, child in value.items():
            new_key = for_postgres(key) if isinstance(key, str) else key
            new_child = for_postgres(child)
            changed = changed or new_key is not key or new_child is not child
            out[new_key] = new_child
        return out if changed else value
    if isinstance(value, list | tuple):
        items = [for_postgres(child) for child in value]
        changed = any(a is not b for a, b in zip(items, value, strict=True))
        return items if changed else value
    return value


def storable_envelope(env: Envelope) -> Envelope:
    """`env` with `for_postgres` applied to its data and its string fields: what the projector folds."""
    fields = {
        name: for_postgres(getattr(env, name))
        for name in ("id", "type", "time", "source", "job_id", "causation_id", "correlation_id", "data")
    }
    if all(fields[name] is getattr(env, name) for name in fields):
        return env
    return dataclasses.replace(env, **fields)

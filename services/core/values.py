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

import orjson

from services.core.envelope import Envelope

#: nesting levels a value may have (an object or array is one level; scalars none). Well under the
#: 255 of the wire encoder, which wraps a payload in a few more levels (envelope, data, event).
MAX_DEPTH = 64
INT_MIN = -(2**63)
#: the largest integer the wire encoder writes (unsigned 64 bit)
INT_MAX = 2**64 - 1
#: what the read models show in place of a code point Postgres text cannot hold
SUBSTITUTE = "\ufffd"
#: the problem an integer literal beyond 64 bits is refused with
OUT_OF_RANGE = f"an integer is outside the 64-bit range ({INT_MIN} … {INT_MAX})"

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
# orjson turns an integer literal beyond 64 bits into a float, so only a float this large can be one
_FLOAT_MAY_BE_BIG_INT = float(2**63)


def _too_deep(max_depth: int) -> str:
    return f"nested deeper than {max_depth} levels"


def _containers(level: list[Any]) -> list[Any]:
    """The children of the objects and arrays in `level` (one level down)."""
    below: list[Any] = []
    for item in level:
        kind = type(item)
        if kind is dict:
            below.extend(item.values())
        elif kind is list or kind is tuple:
            below.extend(item)
    return below


def problem(value: Any, *, max_depth: int = MAX_DEPTH) -> str | None:
    """Why `value` (any Python value, e.g. an in-process plugin's answer) cannot be accepted, or None.
    Walks level by level, without recursion, so any depth is safe to inspect."""
    level = [value]
    depth = 0
    while level:
        below: list[Any] = []
        for item in level:
            found = _scalar_problem(item)
            if found is not None:
                return found
            if isinstance(item, dict):
                for key in item:
                    if not isinstance(key, str):
                        return f"an object key is not a string ({type(key).__name__})"
                    if _SURROGATE.search(key):
                        return "an object key contains a lone surrogate (not valid Unicode)"
                below.extend(item.values())
            elif isinstance(item, list | tuple):
                below.extend(item)
            else:
                continue
            if depth + 1 > max_depth:
                return _too_deep(max_depth)
        level = below
        depth += 1
    return None


def _scalar_problem(item: Any) -> str | None:
    if isinstance(item, str):
        return "a string contains a lone surrogate (not valid Unicode)" if _SURROGATE.search(item) else None
    if isinstance(item, bool):
        return None
    if isinstance(item, int):
        return None if INT_MIN <= item <= INT_MAX else OUT_OF_RANGE
    if isinstance(item, float):
        return None if math.isfinite(item) else "a number is NaN or infinite (not JSON)"
    return None


def _parsed_problem(value: Any, max_depth: int) -> tuple[str | None, bool]:
    """(the depth problem, whether a float large enough to have been an integer literal exists) of a value
    a JSON parser produced: no NaN, no lone surrogate, string keys and in-range integers by construction."""
    level = [value]
    depth = 0
    big_float = False
    while level:
        if depth >= max_depth and any(type(item) in (dict, list) for item in level):
            return _too_deep(max_depth), big_float
        big_float = big_float or any(type(item) is float and abs(item) >= _FLOAT_MAY_BE_BIG_INT for item in level)
        level = _containers(level)
        depth += 1
    return None, big_float


def _checked_int(literal: str) -> int:
    number = int(literal)
    if not INT_MIN <= number <= INT_MAX:
        raise OverflowError(literal)
    return number


def problem_in_json(raw: bytes | str, value: Any, *, max_depth: int = MAX_DEPTH) -> str | None:
    """The problem of `value` as orjson parsed it from `raw`: too deep, or an integer literal in `raw`
    beyond 64 bits (which the parser silently made a float; `raw` is re-read only when a float that
    large exists). Everything else the limits check, the parser already refused."""
    found, big_float = _parsed_problem(value, max_depth)
    if found is not None or not big_float:
        return found
    try:
        json.loads(raw, parse_int=_checked_int)
    except OverflowError:
        return OUT_OF_RANGE
    except ValueError:
        return None  # already parsed once; nothing more to say
    return None


def keys_out_of_range(raw: bytes | str) -> frozenset[str]:
    """The top-level keys of the JSON object `raw` whose values hold an integer beyond 64 bits."""
    exact = json.loads(raw)
    found: set[str] = set()
    for key, item in exact.items() if isinstance(exact, dict) else ():
        level = [item]
        while level and key not in found:
            if any(type(x) is int and not INT_MIN <= x <= INT_MAX for x in level):
                found.add(key)
            level = _containers(level)
    return frozenset(found)


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


def _may_need_substitution(data: Any) -> bool:
    """False only when `data` surely holds no U+0000 and no lone surrogate (checked on its JSON: fast)."""
    try:
        return b"\\u0000" in orjson.dumps(data)
    except orjson.JSONEncodeError:
        return True  # a lone surrogate (or no JSON at all): let the walk decide


def storable_envelope(env: Envelope) -> Envelope:
    """`env` with `for_postgres` applied to its data and its string fields: what the projector folds."""
    fields = {
        name: for_postgres(getattr(env, name))
        for name in ("id", "type", "time", "source", "job_id", "causation_id", "correlation_id")
    }
    fields["data"] = for_postgres(env.data) if _may_need_substitution(env.data) else env.data
    if all(fields[name] is getattr(env, name) for name in fields):
        return env
    return dataclasses.replace(env, **fields)

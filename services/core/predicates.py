"""Structured `if` conditions of pipelines and steps — never code. An atomic
`{path, op, value}` or `all` / `any` / `not`. Strict typing, no coercion; a missing path is
absent for `exists` and null for every other operator. Compiled (and checked) at load.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Any

from services.core import paths

Predicate = Callable[[dict[str, Any]], bool]

OPS = ("exists", "eq", "neq", "in", "gt", "gte", "lt", "lte", "contains", "startswith", "endswith", "regex")


class PredicateError(ValueError):
    """The condition is malformed."""


def _same_type(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    if isinstance(a, int | float) and isinstance(b, int | float):
        return True
    return type(a) is type(b)


def _strict_eq(a: Any, b: Any) -> bool:
    if not _same_type(a, b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_strict_eq(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_strict_eq(a[k], b[k]) for k in a)
    return bool(a == b)


#: the ordering ops, applied only to two numbers or two strings (`_ordered`)
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}


def _ordered(a: Any, b: Any) -> bool:
    numbers = (
        isinstance(a, int | float)
        and isinstance(b, int | float)
        and not isinstance(a, bool)
        and not isinstance(b, bool)
    )
    return numbers or (isinstance(a, str) and isinstance(b, str))


def _atomic(spec: dict[str, Any]) -> Predicate:
    path, op = spec.get("path"), spec.get("op")
    problem = paths.check(path)
    if problem:
        raise PredicateError(problem)
    assert isinstance(path, str)  # paths.check refuses anything else
    if op not in OPS:
        raise PredicateError(f"unknown op {op!r} (one of {', '.join(OPS)})")
    if op != "exists" and "value" not in spec:
        raise PredicateError(f"op {op!r} needs a value")
    value = spec.get("value")
    if op == "in" and not isinstance(value, list):
        raise PredicateError("op 'in' needs a list value")
    if op in ("startswith", "endswith") and not isinstance(value, str):
        raise PredicateError(f"op {op!r} needs a string value")
    if op in ("gt", "gte", "lt", "lte") and (isinstance(value, bool) or not isinstance(value, int | float | str)):
        raise PredicateError(f"op {op!r} needs a number or string value")
    pattern = None
    if op == "regex":
        if not isinstance(value, str):
            raise PredicateError("op 'regex' needs a string pattern")
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise PredicateError(f"invalid regex {value!r}: {exc}") from exc
    # the value as the checks above leave it, for the ops that need it so
    members: list[Any] = value if isinstance(value, list) else []
    affix = value if isinstance(value, str) else ""

    def evaluate(scope: dict[str, Any]) -> bool:
        found = paths.lookup(scope, path)
        if op == "exists":
            return found is not paths.MISSING
        actual = None if found is paths.MISSING else found
        if op == "eq":
            return _strict_eq(actual, value)
        if op == "neq":
            return not _strict_eq(actual, value)
        if op == "in":
            return any(_strict_eq(actual, v) for v in members)
        if op in ("gt", "gte", "lt", "lte"):
            if not _ordered(actual, value):
                return False
            return _COMPARE[op](actual, value)
        if op == "contains":
            if isinstance(actual, str) and isinstance(value, str):
                return value.lower() in actual.lower()
            if isinstance(actual, list):
                return any(_strict_eq(item, value) for item in actual)
            return False
        if op in ("startswith", "endswith"):
            if not isinstance(actual, str):
                return False
            method = str.startswith if op == "startswith" else str.endswith
            return method(actual.lower(), affix.lower())
        assert pattern is not None
        return isinstance(actual, str) and pattern.fullmatch(actual) is not None

    return evaluate


def compile_predicate(spec: Any) -> Predicate:
    """A callable over a scope dict; raises PredicateError naming what is wrong."""
    if not isinstance(spec, dict) or not spec:
        raise PredicateError("a condition must be an object")
    if "all" in spec or "any" in spec:
        key = "all" if "all" in spec else "any"
        items = spec[key]
        if not isinstance(items, list) or not items:
            raise PredicateError(f"'{key}' needs a non-empty list of conditions")
        parts = [compile_predicate(item) for item in items]
        if key == "all":
            return lambda scope: all(p(scope) for p in parts)
        return lambda scope: any(p(scope) for p in parts)
    if "not" in spec:
        inner = compile_predicate(spec["not"])
        return lambda scope: not inner(scope)
    return _atomic(spec)

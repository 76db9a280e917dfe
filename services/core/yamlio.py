"""YAML 1.2 reading for config files and plugin manifests (ruamel.yaml), as Ductile's Go yaml.v3
reads them: `on`, `off`, `yes`, `no` are strings, `0123` is no octal, `1:30` no sexagesimal.

`load` returns plain Python values (dict with str keys, list, str, int, float, bool, None) plus a `Lines` map
from a key path (`("plugins", "echo", "config")`) to the 1-based line it was written on, so a
loader can say where in a file a problem sits.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

Path_ = tuple[str | int, ...]
Lines = dict[Path_, int]

__all__ = ["Lines", "YAMLError", "load", "load_plain", "problem"]


def _parser() -> YAML:
    # round-trip mode keeps line numbers; it constructs only plain data (no arbitrary objects), and
    # without a `%YAML 1.1` directive it resolves scalars by the YAML 1.2 core schema
    parser = YAML(typ="rt", pure=True)
    parser.allow_duplicate_keys = False
    return parser


def load(text: str) -> tuple[Any, Lines]:
    """Parse one YAML 1.2 document; raises YAMLError (see `problem` for a message naming the line)."""
    node = _parser().load(text)
    lines: Lines = {}
    return _plain(node, (), lines), lines


def load_plain(text: str) -> Any:
    """Parse one YAML 1.2 document into plain values (manifests, where line numbers are not kept)."""
    return load(text)[0]


def problem(exc: YAMLError) -> str:
    """`at line L, column C: <problem>` for a parse error."""
    if isinstance(exc, MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return f"invalid YAML{at}: {exc.problem or exc.context or exc}"
    return f"invalid YAML: {exc}"


def _plain(node: Any, path: Path_, lines: Lines) -> Any:
    if isinstance(node, CommentedMap):
        out: dict[Any, Any] = {}
        for key, value in node.items():
            plain_key = _key(key)
            sub = (*path, plain_key)
            try:
                lines[sub] = node.lc.key(key)[0] + 1
            except (KeyError, TypeError, AttributeError):
                pass
            out[plain_key] = _plain(value, sub, lines)
        return out
    if isinstance(node, CommentedSeq):
        items = []
        for i, value in enumerate(node):
            try:
                lines[(*path, i)] = node.lc.item(i)[0] + 1
            except (KeyError, TypeError, AttributeError):
                pass
            items.append(_plain(value, (*path, i), lines))
        return items
    if isinstance(node, Mapping):
        return {_key(k): _plain(v, (*path, _key(k)), lines) for k, v in node.items()}
    return _scalar(node)


def _key(key: Any) -> str:
    """Every mapping key as a string, as Go decodes a YAML map into `map[string]any` (`1: x` → "1",
    `true: x` → "true"): JSON documents, the schema and plugins' `config` take string keys only."""
    if isinstance(key, str):
        return str(key)
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(_scalar(key))


def _scalar(value: Any) -> Any:
    """ruamel's scalar subclasses as the plain type (orjson, jsonschema and equality expect those)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, dt.datetime | dt.date):
        # a timestamp-looking value is kept as text (Ductile decodes `at:` as a string, RFC 3339)
        return value.isoformat()
    return value

"""Comparing one request's answer from Laddr with Headrace's: status code, key sets (nested, for
every object), and the JSON type of every value, never the values themselves (ids, timestamps,
texts differ by nature), except a few enum-like fields whose words a client branches on
(`status`, `type`, `event_type`), which are reported as notes.

Lists are compared by the union of their items' shapes; a list of objects that carry a kind
(`event_type` for traces, `type` for WebSocket messages) is compared kind by kind, so a trace
list reports e.g. `traces[task_start].payload: missing started_at`. Object keys that are ids
(UUIDs, ULIDs, long hex) are folded into `<id>`, so a map keyed by job id compares as one entry.

Verdicts: `match` (same status, keys and types), `superset` (Headrace adds keys or fills a value
Laddr leaves null; a Laddr client is unaffected), `differs` (anything else).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

_ID_KEY = re.compile(r"^([0-9a-f]{8}-[0-9a-f]{4}-|[0-9A-HJKMNP-TV-Z]{26}$|[0-9a-f]{20,}$)", re.I)
KIND_KEYS = ("event_type", "type")
ENUM_KEYS = frozenset({"status", "type", "event_type"})
MAX_DEPTH = 6


def _type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _key(k: str) -> str:
    return "<id>" if _ID_KEY.match(k) else k


def _kinds(items: list[Any]) -> str | None:
    """The discriminating key if every item is an object carrying it."""
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    for kk in KIND_KEYS:
        if all(isinstance(i.get(kk), str) for i in items):
            return kk
    return None


@dataclass
class Diff:
    major: list[str] = field(default_factory=list)
    minor: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        if self.major:
            return "differs"
        return "superset" if self.minor else "match"


def _merge_objects(items: list[dict[str, Any]]) -> dict[str, list[Any]]:
    merged: dict[str, list[Any]] = {}
    for item in items:
        for k, v in item.items():
            merged.setdefault(_key(k), []).append(v)
    return merged


def _compare_values(path: str, ours: list[Any], theirs: list[Any], d: Diff, depth: int) -> None:
    """`ours` = Laddr's values at `path` (several when under a list), `theirs` = Headrace's."""
    lt = {_type(v) for v in ours}
    ht = {_type(v) for v in theirs}
    if lt != ht:
        lt_nn, ht_nn = lt - {"null"}, ht - {"null"}
        desc = f"`{path}`: {'/'.join(sorted(lt))} vs {'/'.join(sorted(ht))}"
        if lt == {"null"} and ht_nn:
            d.minor.append(desc + " (Laddr null)")
        elif lt_nn and lt_nn == ht_nn:
            d.minor.append(desc + " (nullability)")
        else:
            d.major.append(desc)
    if depth >= MAX_DEPTH:
        return
    lo = [v for v in ours if isinstance(v, dict)]
    ho = [v for v in theirs if isinstance(v, dict)]
    if lo and ho:
        _compare_objects(path, lo, ho, d, depth + 1)
    ll = [x for v in ours if isinstance(v, list) for x in v]
    hl = [x for v in theirs if isinstance(v, list) for x in v]
    if ll and hl:
        _compare_lists(path, ll, hl, d, depth + 1)
        if len(ours) == len(theirs) == 1:
            _compare_order(path, ll, hl, d)
            if len(ll) != len(hl):
                d.notes.append(f"`{path}`: {len(ll)} items vs {len(hl)}")
    elif ll and not hl and any(isinstance(v, list) for v in theirs):
        d.major.append(f"`{path}`: Laddr has {len(ll)} items, Headrace an empty list")
    elif hl and not ll and any(isinstance(v, list) for v in ours):
        d.major.append(f"`{path}`: Laddr has an empty list, Headrace {len(hl)} items")
    if path.rsplit(".", 1)[-1].split("[")[0] in ENUM_KEYS:
        lv = sorted({v for v in ours if isinstance(v, str)})
        hv = sorted({v for v in theirs if isinstance(v, str)})
        if lv and hv and lv != hv:
            d.notes.append(f"`{path}`: {'/'.join(lv)} vs {'/'.join(hv)}")


def _compare_objects(path: str, ours: list[dict[str, Any]], theirs: list[dict[str, Any]], d: Diff, depth: int) -> None:
    lm, hm = _merge_objects(ours), _merge_objects(theirs)
    prefix = f"{path}." if path else ""
    missing = [k for k in lm if k not in hm]
    extra = [k for k in hm if k not in lm]
    if missing:
        d.major.append(f"`{path or '(top)'}` missing in Headrace: {', '.join(missing)}")
    if extra:
        d.minor.append(f"`{path or '(top)'}` extra in Headrace: {', '.join(extra)}")
    for k in lm:
        if k in hm:
            _compare_values(prefix + k, lm[k], hm[k], d, depth)


def _direction(items: list[Any]) -> str | None:
    """The order ("oldest first" / "newest first") of a list of rows with an int `id` or a timestamp, else None."""
    for key in ("id", "timestamp", "created_at", "start_time"):
        keys = [i.get(key) for i in items if isinstance(i, dict)]
        if len(keys) < 2 or len(keys) != len(items) or not all(isinstance(k, type(keys[0])) for k in keys):
            continue
        if not isinstance(keys[0], int | str) or isinstance(keys[0], bool):
            continue
        pairs = list(itertools.pairwise(keys))
        if all(a <= b for a, b in pairs) and any(a < b for a, b in pairs):
            return f"oldest first (by {key})"
        if all(a >= b for a, b in pairs) and any(a > b for a, b in pairs):
            return f"newest first (by {key})"
        return None
    return None


def _compare_order(path: str, ours: list[Any], theirs: list[Any], d: Diff) -> None:
    lo, ho = _direction(ours), _direction(theirs)
    if lo and ho and lo.split(" (")[0] != ho.split(" (")[0]:
        d.major.append(f"`{path}` order: {lo} vs {ho}")


def _compare_lists(path: str, ours: list[Any], theirs: list[Any], d: Diff, depth: int) -> None:
    kk = _kinds(ours)
    if kk and _kinds(theirs) == kk:
        lg: dict[str, list[Any]] = {}
        hg: dict[str, list[Any]] = {}
        for i in ours:
            lg.setdefault(i[kk], []).append(i)
        for i in theirs:
            hg.setdefault(i[kk], []).append(i)
        missing = [k for k in lg if k not in hg]
        extra = [k for k in hg if k not in lg]
        if missing:
            d.major.append(f"`{path}[]` {kk}s missing in Headrace: {', '.join(missing)}")
        if extra:
            d.notes.append(f"`{path}[]` {kk}s only in Headrace: {', '.join(extra)}")
        for k in lg:
            if k in hg:
                _compare_objects(f"{path}[{k}]", lg[k], hg[k], d, depth)
        return
    _compare_values(f"{path}[]", ours, theirs, d, depth)


def compare(laddr: dict[str, Any], headrace: dict[str, Any]) -> Diff:
    """Each side: {"status": int, "ctype": str, "body": Any}."""
    d = Diff()
    if laddr["status"] != headrace["status"]:
        d.major.append(f"status {laddr['status']} vs {headrace['status']}")
    lj, hj = laddr.get("json", False), headrace.get("json", False)
    if lj and hj:
        _compare_values("", [laddr["body"]], [headrace["body"]], d, 0)
        # a top-level type difference was reported as "``: …"; name it
        d.major = [m.replace("``:", "body:") for m in d.major]
        d.minor = [m.replace("``:", "body:") for m in d.minor]
    elif lj != hj:
        d.major.append(
            f"body: {'JSON' if lj else laddr['ctype'] or 'empty'} vs {'JSON' if hj else headrace['ctype'] or 'empty'}"
        )
    return d


def shape(value: Any, depth: int = 0) -> str:
    """A compact rendering of a body's shape for the report's key columns."""
    if isinstance(value, dict):
        if depth >= 1:
            return "{" + ",".join(_key(k) for k in value) + "}"
        return (
            "{"
            + ", ".join(
                f"{_key(k)}" + (":" + shape(v, depth + 1) if isinstance(v, dict | list) else "")
                for k, v in value.items()
            )
            + "}"
        )
    if isinstance(value, list):
        if not value:
            return "[]"
        return "[" + shape(value[0], depth + 1) + (f" x{len(value)}" if len(value) > 1 else "") + "]"
    return _type(value)

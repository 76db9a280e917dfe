"""The runner's fast check of a plugin response never accepts what the protocol-response schema refuses,
and accepts the usual answers (so the schema validator runs only for the odd ones)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.core import schemas
from services.runner import protocol

scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from(["", "ok", "error", "x"]))
anything = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=2), st.dictionaries(st.sampled_from(["a", "type"]), inner, max_size=2)
    ),
    max_leaves=4,
)


def maybe(value: Any) -> Any:
    return st.one_of(value, anything)


event = st.fixed_dictionaries(
    {},
    optional={
        "type": maybe(st.text(max_size=2)),
        "payload": maybe(st.just({})),
        "dedupe_key": maybe(st.one_of(st.none(), st.text(max_size=2))),
        "other": anything,
    },
)
log = st.fixed_dictionaries(
    {},
    optional={
        "message": maybe(st.text(max_size=2)),
        "level": maybe(st.sampled_from(["info", "warn"])),
        "other": anything,
    },
)
response = st.fixed_dictionaries(
    {},
    optional={
        "status": maybe(st.sampled_from(["ok", "error"])),
        "result": anything,
        "error": maybe(st.text(max_size=2)),
        "retry": maybe(st.booleans()),
        "events": maybe(st.lists(maybe(event), max_size=2)),
        "state_updates": maybe(st.just({"k": 1})),
        "logs": maybe(st.lists(maybe(log), max_size=2)),
        "other": anything,
    },
)


@settings(max_examples=3000, deadline=None)
@given(st.one_of(response, anything))
def test_the_fast_check_accepts_only_what_the_schema_accepts(doc: Any) -> None:
    if protocol.plainly_valid(doc):
        assert schemas.violations("protocol-response", doc) == []


def test_the_usual_answers_take_the_fast_path() -> None:
    usual = [
        {
            "status": "ok",
            "result": "Echoed: hi",
            "events": [],
            "state_updates": {},
            "logs": [{"level": "info", "message": "Echoed: hi"}],
        },
        {
            "status": "ok",
            "result": {"echo": {}},
            "events": [{"type": "echo.handled", "payload": {"a": 1}}],
            "logs": [{"message": "m"}],
        },
        {"status": "ok", "result": None, "events": [{"type": "t", "dedupe_key": None}]},
        {"status": "error", "error": "boom", "retry": False},
    ]
    for doc in usual:
        assert protocol.plainly_valid(doc) and schemas.violations("protocol-response", doc) == []

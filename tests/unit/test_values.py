"""The value limits (`values.problem`, `problem_in_json`) and the read models' substitution
(`values.for_postgres`), and the LLM answer check that uses them."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest

from services.core import values
from services.runner import llm


def nested(levels: int, leaf: Any = 1) -> Any:
    value = leaf
    for i in range(levels):
        value = {"n": value} if i % 2 else [value]
    return value


def test_the_depth_limit_counts_objects_and_arrays() -> None:
    assert values.problem(nested(values.MAX_DEPTH)) is None
    assert values.problem(nested(values.MAX_DEPTH + 1)) == f"nested deeper than {values.MAX_DEPTH} levels"
    assert values.problem(nested(5000)) is not None  # walked without recursion


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        (2**64, "64-bit"),
        (-(2**63) - 1, "64-bit"),
        (math.nan, "NaN"),
        (math.inf, "NaN"),
        ({1: "x"}, "not a string"),
        ("a\ud800", "lone surrogate"),
        ({"\udc00": 1}, "lone surrogate"),
    ],
)
def test_what_the_wire_cannot_carry_is_named(value: Any, needle: str) -> None:
    problem = values.problem({"k": [value]})
    assert problem is not None and needle in problem


def test_the_edges_that_fit_are_accepted() -> None:
    fits = {"": 2**64 - 1, "k" * 100_000: -(2**63), "a\x00": 1.5e300, "t": (1, "\ufffd")}
    assert values.problem(fits) is None
    orjson.dumps(fits)  # and the wire encoder agrees


def test_integers_a_parser_made_floats_are_found_in_the_text() -> None:
    raw = b'{"a": 123456789012345678901234567890}'
    assert "64-bit" in (values.problem_in_json(raw, orjson.loads(raw)) or "")
    raw = b'{"a": 1.2345678901234568e+29, "b": 18446744073709551615}'
    assert values.problem_in_json(raw, orjson.loads(raw)) is None


def test_for_postgres_replaces_nul_and_lone_surrogates_everywhere() -> None:
    value = {"a\x00": ["x\x00y", {"\ud800k": "\udfff"}], "same": "ok"}
    assert values.for_postgres(value) == {"a\ufffd": ["x\ufffdy", {"\ufffdk": "\ufffd"}], "same": "ok"}
    clean = {"a": ["b", {"c": 1}]}
    assert values.for_postgres(clean) is clean  # nothing to replace: not even a copy
    assert values.for_postgres({"a\x00": 1, "a\ufffd": 2}) == {"a\ufffd": 2}  # collapsed keys: the later wins


def test_an_llm_answer_beyond_the_limits_is_a_permanent_llm_error() -> None:
    body = {
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "t", "arguments": nested(300)}}
                    ],
                }
            }
        ]
    }
    with pytest.raises(llm.LlmError) as caught:
        llm.parse_response(body, model="m")
    assert caught.value.retryable is False and "nested deeper than" in caught.value.message

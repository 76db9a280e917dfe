"""The side-by-side harness's comparison (bench/sbs_compare.py): what counts as a match, a
superset and a difference between a Laddr answer and Headrace's."""

from __future__ import annotations

from typing import Any

from bench.sbs_compare import compare, shape


def answer(status: int, body: Any) -> dict[str, Any]:
    return {"status": status, "ctype": "application/json", "json": True, "body": body}


def test_values_are_ignored_but_types_and_keys_are_not() -> None:
    laddr = answer(200, {"job_id": "8d57f99e-aaaa-4bbb-8ccc-000000000000", "duration_ms": 136, "error": None})
    same = answer(200, {"job_id": "01a2356e-81a5-7301-9790-d3f71e9f7e66", "duration_ms": 99, "error": None})
    assert compare(laddr, same).verdict == "match"
    floaty = answer(200, {"job_id": "x", "duration_ms": 1.5, "error": None})
    assert compare(laddr, floaty).major == ["`duration_ms`: int vs float"]


def test_extra_keys_and_filled_nulls_are_a_superset_missing_keys_differ() -> None:
    laddr = answer(200, {"prompts": [{"prompt_id": "a", "completed_at": None}], "limit": 5})
    more = answer(
        200,
        {
            "prompts": [{"prompt_id": "b", "completed_at": "2026-12-02T00:00:00Z", "mode": "single"}],
            "limit": 5,
            "offset": 0,
        },
    )
    d = compare(laddr, more)
    assert d.verdict == "superset" and d.major == []
    fewer = answer(200, {"prompts": [{"prompt_id": "b"}]})
    d = compare(laddr, fewer)
    assert d.verdict == "differs"
    assert "`(top)` missing in Headrace: limit" in d.major
    assert "`prompts[]` missing in Headrace: completed_at" in d.major


def test_status_code_shape_and_error_bodies() -> None:
    d = compare(
        answer(422, {"detail": [{"type": "missing", "loc": ["body"]}]}),
        answer(400, {"error": "bad", "code": "bad_request"}),
    )
    assert d.major[:2] == ["status 422 vs 400", "`(top)` missing in Headrace: detail"]
    d = compare(answer(200, {"jobs": [], "limit": 50}), answer(200, []))
    assert d.major == ["body: object vs list"]
    html = {"status": 200, "ctype": "text/html", "json": False, "body": "<html>"}
    assert compare(html, answer(404, {"error": "no route"})).major == ["status 200 vs 404", "body: text/html vs JSON"]


def test_lists_of_events_compare_kind_by_kind_with_order_and_emptiness() -> None:
    laddr = answer(
        200,
        {
            "traces": [
                {"id": 1, "event_type": "task_start", "payload": {"inputs": {}, "worker": "w"}},
                {"id": 2, "event_type": "autonomous_think", "payload": {"iteration": 1}},
                {"id": 3, "event_type": "task_complete", "payload": {"result": {}}},
            ]
        },
    )
    hr = answer(
        200,
        {
            "traces": [
                {"id": 9, "event_type": "task_complete", "payload": {"result": "text"}},
                {"id": 8, "event_type": "task_start", "payload": {"inputs": {}}},
            ]
        },
    )
    d = compare(laddr, hr)
    assert "`traces[]` event_types missing in Headrace: autonomous_think" in d.major
    assert "`traces[task_start].payload` missing in Headrace: worker" in d.major
    assert "`traces[task_complete].payload.result`: object vs str" in d.major
    assert "`traces` order: oldest first (by id) vs newest first (by id)" in d.major
    d = compare(answer(200, {"traces": []}), answer(200, {"traces": [{"id": 1, "event_type": "x"}]}))
    assert d.major == ["`traces`: Laddr has an empty list, Headrace 1 items"]


def test_map_keys_that_are_ids_fold_together_and_shape_renders_compactly() -> None:
    laddr = answer(200, {"results": {"34e2687a-b168-409b-b9fe-45ec7cad28bc": {"status": "success"}}})
    hr = answer(200, {"results": {"01a2356e-81a5-7301-9790-d3f71e9f7e66": {"status": "success"}}})
    assert compare(laddr, hr).verdict == "match"
    assert shape({"a": [{"b": 1}, {"b": 2}], "c": {"d": None}}) == "{a:[{b} x2], c:{d}}"

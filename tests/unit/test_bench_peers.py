"""The pure parts of `python -m bench --peers`: the ABBA schedule, goal evaluation and the --json rows."""

from __future__ import annotations

import shutil

import orjson

from bench import main, peers


def test_abba_alternates_which_side_goes_first() -> None:
    assert peers.abba(2) == ["headrace", "peer", "peer", "headrace"]
    assert peers.abba(3, "a", "b") == ["a", "b", "b", "a", "a", "b"]
    order = peers.abba(4)
    assert order.count("headrace") == order.count("peer") == 4


def test_met_reads_a_floor_or_a_ceiling() -> None:
    assert peers.met(1.2, 1.0) is True
    assert peers.met(0.9, 1.0) is False
    assert peers.met(2.0, 3.0, lower_better=True) is True
    assert peers.met(3.5, 3.0, lower_better=True) is False
    assert peers.met(None, 1.0) is None
    assert peers.met(1.0, None) is None


def test_json_row_has_the_issue_keys() -> None:
    row = peers.json_row("x", 300.0, 600.0, 0.5, 0.7, unit="jobs/s")
    assert {"row", "headrace", "baseline", "ratio", "goal", "met"} <= row.keys()
    assert row["met"] is False and row["goal_is"] == "min"
    latency = peers.json_row("p50", 3.0, 1.5, 2.0, 3.0, lower_better=True, unit="ms")
    assert latency["met"] is True and latency["goal_is"] == "max"


def test_rows_render_and_serialise() -> None:
    rows = [
        main.Row(
            "accept",
            "1,000 req/s",
            "1,200 req/s",
            1000 / 1200,
            main.ACCEPT_GOAL,
            headrace_value=1000.0,
            baseline_value=1200.0,
            unit="req/s",
        ),
        main.Row("e2e vs Celery", "300 jobs/s", "600 jobs/s", 0.5, 1.0, unit="jobs/s"),
        main.Row("p99", "20 ms", "5 ms", 4.0, 5.0, lower_better=True, unit="ms"),
        main.Row("skipped", "—", "skipped: no redis-server", None, 1.0),
    ]
    table = main.render_table(rows)
    assert "≥ 70% ✓" in table and "0.50x" in table and "≥ 1x ✗" in table and "≤ 5x ✓" in table
    data = orjson.loads(orjson.dumps([r.json() for r in rows]))
    assert [d["met"] for d in data] == [True, False, True, None]
    assert data[0]["headrace"] == 1000.0 and data[3]["ratio"] is None


def test_peers_rows_are_skipped_with_a_reason_without_redis() -> None:
    bench = main.Bench(main._parser().parse_args(["--peers"]), set())  # starts nothing until run()
    try:
        assert bench.peers is not None
        bench.peers.skip_reason = "redis-server is not on PATH"
        bench.peers.skipped()
        assert len(bench.rows) == len(bench.peers.comparisons()) == 4
        assert all(r.met is None and "redis-server" in r.baseline for r in bench.rows)
        assert {r.goal for r in bench.rows} == {peers.E2E_GOAL, peers.E2E_2M_GOAL, peers.DIRECT_GOAL, None}
    finally:
        shutil.rmtree(bench.tmp, ignore_errors=True)


def test_selection_takes_peers() -> None:
    assert main.selection(["peers"]) == set()
    assert main.selection(["accept,peers"]) == {"accept"}

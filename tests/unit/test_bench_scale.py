"""The pure parts of `python -m bench --scale` (bench/scale.py): the shapes and their ABBA order, which
processes a shape change stops and starts (never the active dispatcher), CPU by process kind, the capacity
figures and the table. The measuring itself needs a whole stack of processes for half a minute or more, so
it is not run here (bench/README.md has its figures)."""

from __future__ import annotations

import shutil
import time

import pytest

from bench import main, scale


def test_shapes_are_the_runner_series_then_the_dispatcher_series_each_once() -> None:
    shapes = scale.shapes([1, 2, 4], [1, 2, 4], dispatcher_runners=1)
    assert shapes == [scale.Shape(1, 1), scale.Shape(2, 1), scale.Shape(4, 1), scale.Shape(1, 2), scale.Shape(1, 4)]
    # with 2 runners beside the dispatchers, (2, 1) is in both series and measured once
    assert scale.shapes([1, 2], [1, 3], dispatcher_runners=2) == [
        scale.Shape(1, 1),
        scale.Shape(2, 1),
        scale.Shape(2, 3),
    ]
    assert scale.Shape(1, 1).name == "1 runner, 1 dispatcher"
    assert scale.Shape(4, 2).name == "4 runners, 2 dispatchers"


def test_rounds_alternate_direction() -> None:
    shapes = scale.shapes([1, 2], [2], dispatcher_runners=1)
    rounds = scale.order(shapes, 3)
    assert rounds == [shapes, shapes[::-1], shapes]
    flat = [s for r in rounds for s in r]
    assert all(flat.count(s) == 3 for s in shapes)


def test_parse_counts() -> None:
    assert scale.parse_counts("1,2,4") == [1, 2, 4]
    assert scale.parse_counts("4, 1,4,") == [4, 1]
    for bad in ("0", "", "1,-2", "x"):
        with pytest.raises(ValueError):
            scale.parse_counts(bad)


def test_plan_stops_standbys_never_the_active_dispatcher() -> None:
    # d1 holds the lease; going from 4 dispatchers to 2 stops two standbys, d1 stays
    plan = scale.plan(["r1"], ["d2", "d1", "d3", "d4"], "d1", scale.Shape(1, 2))
    assert plan.stop == ["d2", "d3"] and plan.runners == 0 and plan.dispatchers == 0
    # 4 runners → 1 runner and one more dispatcher
    plan = scale.plan(["r1", "r2", "r3", "r4"], ["d1"], "d1", scale.Shape(1, 2))
    assert plan.stop == ["r2", "r3", "r4"] and plan.runners == 0 and plan.dispatchers == 1
    # from nothing: everything to start
    plan = scale.plan([], [], None, scale.Shape(2, 4))
    assert plan.stop == [] and plan.runners == 2 and plan.dispatchers == 4
    # nothing to change
    plan = scale.plan(["r1", "r2"], ["d1"], "d1", scale.Shape(2, 1))
    assert plan.stop == [] and plan.runners == plan.dispatchers == 0


def test_cpu_by_kind_splits_the_active_dispatcher_from_its_standbys() -> None:
    cpu = {
        "api": 1.0,
        "scale-runner-2": 0.5,
        "scale-runner-5": 0.25,
        "scale-dispatcher-1": 0.75,
        "scale-dispatcher-6": 0.01,
        "scale-dispatcher-7": 0.02,
        "scale-projector-3": 0.4,
        "scale-postgres-4242": 0.3,
        "scale-postgres-4243": 0.1,
        "nats-server": 0.6,
        "loadgen": 0.2,
        "scale-ceiling": 0.05,  # idle during a batch: no kind
        "bench": 0.1,
        "bench-postgres": 0.02,
    }
    kinds = scale.by_kind(cpu, "scale-dispatcher-1")
    assert kinds == pytest.approx(
        {
            "api": 1.0,
            "runner": 0.75,
            "dispatcher": 0.75,
            "standby": 0.03,
            "projector": 0.4,
            "postgres": 0.4,
            "nats-server": 0.6,
            "loadgen": 0.2,
        }
    )
    busiest = scale.busiest_by_kind(cpu, "scale-dispatcher-1", seconds=2.0)
    assert busiest["runner"] == pytest.approx(0.25) and busiest["postgres"] == pytest.approx(0.15)
    assert scale.delta({"a": 1.0, "b": 2.0}, {"a": 1.5, "b": 2.0, "c": 0.5}) == {"a": 0.5, "b": 0.0, "c": 0.5}


def test_results_capacity_and_table() -> None:
    one = scale.Result(scale.Shape(1, 1))
    one.add(jobs=1000, seconds=4.0, cpu={"runner": 2.0, "dispatcher": 1.0}, box=7.0, others=2.0)
    one.add(jobs=1000, seconds=4.0, cpu={"runner": 2.0, "dispatcher": 1.0}, box=7.0, others=2.0)
    one.ratios += [0.1, 0.12]
    two = scale.Result(scale.Shape(2, 1))
    two.add(jobs=2000, seconds=5.0, cpu={"runner": 4.4, "dispatcher": 2.0}, box=9.0, others=1.0)
    two.ratios += [0.15]
    assert one.rate == 250.0 and one.rates == [250.0, 250.0] and one.ratio == pytest.approx(0.11)
    assert one.ms_per_job() == {"runner": 2.0, "dispatcher": 1.0}
    assert two.core_share()["runner"] == pytest.approx(0.88)
    assert scale.capacity(one.ms_per_job()) == {"runner": 500.0, "dispatcher": 1000.0}
    table = scale.render([one, two], cores=2)
    lines = table.splitlines()
    assert lines[0].split("|")[1].strip() == "shape" and len(lines) == 4
    assert "| 2 runners, 1 dispatcher | 400 " in table
    assert "1.60x" in table  # 400 / 250 jobs/s
    assert "1.36x" in table  # 0.15 / 0.11 of the ceiling
    assert "2.20 (88%)" in table  # the runners' 4.4 s over 2000 jobs and 5 s
    assert "10% of 2 cores" in table  # two's others: 1 s over 5 s and 2 cores


def test_box_cpu_seconds_counts_this_process_spinning() -> None:
    before = scale.box_cpu_seconds()
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:
        pass
    assert scale.box_cpu_seconds() - before >= 0.15


def test_scale_flag_alone_selects_no_other_row() -> None:
    args = main._parser().parse_args(["--scale"])
    assert args.jobs == 1000 and args.scale_rounds == 4 and args.scale_runners == "1,2,4"
    bench = main.Bench(args, set())  # starts nothing until run()
    try:
        assert bench.scale is not None and len(bench.scale.shapes) == 5
    finally:
        shutil.rmtree(bench.tmp, ignore_errors=True)
    with pytest.raises(SystemExit, match="at least 1"):
        main.main(["--scale", "--scale-runners", "0"])

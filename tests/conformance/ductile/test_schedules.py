"""Ductile's schedule keys, enforced (shared/spec/ductile-conformance.md §5.6; Ductile's
`scheduler.go` decides, our reference is silent): `if_running: cancel`, `only_between`,
`not_on`, `timezone` for both, `catch_up: run_once | run_all`. The dispatcher runs on a test clock
(tests/e2e/test_schedules.py); every decision is read back from the schedule's event subject."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.core import config as config_mod
from services.core import errors
from tests.e2e.test_schedules import Clock, clocked, decisions, fired_at, plugins_with, wait_decisions
from tests.support.stack import REPO

__all__ = ["clocked"]  # the fixture, imported for pytest


async def test_if_running_cancel_cancels_the_previous_job_then_fires(make_config: Any, clocked: Any) -> None:
    clock = Clock(datetime(2026, 1, 1, 10, 0, 0, tzinfo=UTC))
    config = make_config(
        plugins=plugins_with(napper=[{"id": "nap", "every": "1m", "payload": {"seconds": 30}, "if_running": "cancel"}])
    )
    s = await clocked(config, clock)
    await wait_decisions(s, "napper", "nap", 1)
    clock.set(10, 1, 0)
    found = await wait_decisions(s, "napper", "nap", 2)
    first = found[1][1]["job_id"]
    await s.client.wait_job(first, {"running"})

    clock.set(10, 2, 0)
    found = await wait_decisions(s, "napper", "nap", 3)
    assert found[2][0] == "schedule.fired" and found[2][1]["cancelled_job_id"] == first
    second = found[2][1]["job_id"]
    assert second != first
    assert (await s.client.wait_job(first, timeout_s=20))["status"] == "cancelled"
    assert (await s.client.wait_job(second, {"running", "succeeded"}))["status"] in ("running", "succeeded")

    # a previous job that is already final is left alone: no cancel is asked for
    status, _ = await s.client.post(f"/job/{second}/cancel")
    assert status == 202
    await s.client.wait_job(second)
    clock.set(10, 3, 0)
    found = await wait_decisions(s, "napper", "nap", 4)
    assert found[3][0] == "schedule.fired" and "cancelled_job_id" not in found[3][1]
    # leave no 30 s nap running when the stack stops
    await s.client.post(f"/job/{found[3][1]['job_id']}/cancel")
    await s.client.wait_job(found[3][1]["job_id"], timeout_s=20)


async def test_max_outstanding_polls_bounds_a_queueing_schedule(make_config: Any, clocked: Any) -> None:
    clock = Clock(datetime(2026, 1, 1, 10, 0, 0, tzinfo=UTC))
    plugins = plugins_with(napper=[{"id": "nap", "every": "1m", "payload": {"seconds": 30}, "if_running": "queue"}])
    plugins["napper"]["max_outstanding_polls"] = 2
    s = await clocked(make_config(plugins=plugins), clock)
    await wait_decisions(s, "napper", "nap", 1)
    for minute, count in ((1, 2), (2, 3), (3, 4)):
        clock.set(10, minute, 0)
        found = await wait_decisions(s, "napper", "nap", count)
        if minute < 3:
            await s.client.wait_job(found[-1][1]["job_id"], {"running"})
    assert [kind for kind, _ in found[1:]] == ["schedule.fired", "schedule.fired", "schedule.skipped"]
    assert found[3][1]["reason"] == "outstanding_limit" and found[3][1]["max_outstanding_polls"] == 2
    for _, data in found[1:3]:  # once they are done, it fires again
        await s.client.post(f"/job/{data['job_id']}/cancel")
        await s.client.wait_job(data["job_id"])
    clock.set(10, 4, 0)
    found = await wait_decisions(s, "napper", "nap", 5)
    assert found[4][0] == "schedule.fired" and found[4][1]["outstanding"] == [found[4][1]["job_id"]]
    await s.client.post(f"/job/{found[4][1]['job_id']}/cancel")


async def test_only_between_and_not_on_skip_fires_outside_them(make_config: Any, clocked: Any) -> None:
    # 2026-01-01 is a Thursday
    clock = Clock(datetime(2026, 1, 1, 10, 0, 30, tzinfo=UTC))
    config = make_config(
        plugins=plugins_with(
            echo_py=[
                {"id": "window", "cron": "* * * * *", "only_between": "10:02-10:03"},
                {"id": "berlin", "cron": "* * * * *", "only_between": "11:02-11:03", "timezone": "Europe/Berlin"},
                {"id": "weekday", "cron": "* * * * *", "not_on": ["thurs", 6]},
                {"id": "sunday", "cron": "* * * * *", "not_on": [7, "sat"]},
            ]
        )
    )
    s = await clocked(config, clock)
    for schedule_id in ("window", "berlin", "weekday", "sunday"):
        await wait_decisions(s, "echo_py", schedule_id, 1)
    for minute, count in ((1, 2), (2, 3), (3, 4)):
        clock.set(10, minute, 1)
        for schedule_id in ("window", "berlin", "weekday", "sunday"):
            await wait_decisions(s, "echo_py", schedule_id, count)

    window = await decisions(s, "echo_py", "window")
    assert [kind for kind, _ in window[1:]] == ["schedule.skipped", "schedule.fired", "schedule.skipped"]
    assert window[1][1]["reason"] == window[3][1]["reason"] == "outside_time_window"  # the end is exclusive
    assert fired_at(await decisions(s, "echo_py", "berlin")) == ["10:02"]  # 11:02 in Berlin (UTC+1)
    weekday = await decisions(s, "echo_py", "weekday")
    assert fired_at(weekday) == [] and {d["reason"] for _, d in weekday[1:]} == {"outside_day_constraint"}
    assert fired_at(await decisions(s, "echo_py", "sunday")) == ["10:01", "10:02", "10:03"]

    status, body = await s.client.get("/scheduler/jobs")
    assert status == 200, body
    listed = {j["schedule_id"]: j for j in body["jobs"]}
    assert listed["window"]["only_between"] == "10:02-10:03" and listed["sunday"]["not_on"] == ["sat", "sun"]


async def test_catch_up_run_once_runs_one_missed_fire_and_run_all_runs_them_all(make_config: Any, clocked: Any) -> None:
    clock = Clock(datetime(2026, 1, 1, 10, 0, 0, tzinfo=UTC))
    config = make_config(
        plugins=plugins_with(
            echo_py=[
                {"id": "once", "every": "1m", "catch_up": "run_once"},
                {"id": "all", "every": "1m", "catch_up": "run_all"},
                {"id": "never", "every": "1m", "catch_up": "skip"},
            ]
        )
    )
    s = await clocked(config, clock)
    for schedule_id in ("once", "all", "never"):
        await wait_decisions(s, "echo_py", schedule_id, 1)
    await s.dispatcher.stop()  # down from 10:00 to 10:15:10: fifteen fires missed
    clock.set(10, 15, 10)
    await s.restart_dispatcher()

    everything = await wait_decisions(s, "echo_py", "all", 1 + 15)
    assert fired_at(everything) == [f"10:{m:02d}" for m in range(1, 16)]
    once = await wait_decisions(s, "echo_py", "once", 3)
    assert [kind for kind, _ in once] == ["schedule.armed", "schedule.skipped", "schedule.fired"]
    assert fired_at(once) == ["10:15"] and once[1][1]["missed"] == 1 and once[1][1]["more_missed_before"]
    never = await wait_decisions(s, "echo_py", "never", 3)
    assert fired_at(never) == ["10:15"]  # on time: runs; the missed ones are skipped, as Ductile's skip
    assert "catch_up: false" in never[1][1]["reason"]
    for _, data in everything[1:]:
        assert (await s.client.wait_job(data["job_id"]))["status"] == "succeeded"


def test_if_running_defaults_to_skip_as_ductile(tmp_path: Path) -> None:
    """§5.6: `if_running: skip` is the default (a fire is skipped while the previous one runs)."""
    path = tmp_path / "config.yaml"
    path.write_text(
        f"plugin_roots: [{REPO / 'plugins'}]\nplugins:\n  echo:\n    enabled: true\n    schedules:\n      - every: 5m\n"
    )
    (schedule,) = config_mod.load(path, env={}).schedules
    assert schedule.if_running == "skip"


def test_ductile_schedule_keys_load_without_warnings(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        f"plugin_roots: [{REPO / 'plugins'}]\n"
        "plugins:\n"
        "  echo:\n"
        "    enabled: true\n"
        "    schedules:\n"
        "      - id: nightly\n"
        "        every: hourly\n"
        '        only_between: "22:00-06:00"\n'
        "        not_on: [sat, sunday, 0, 7]\n"
        "        timezone: Australia/Sydney\n"
        "        if_running: cancel\n"
        "        catch_up: run_all\n"
        "        jitter: 30s\n"
    )
    config = config_mod.load(path, env={})
    assert not [w for w in config.warnings if "schedules" in w], config.warnings
    (schedule,) = config.schedules  # what the scheduler runs (every: hourly and no command would not parse raw)
    assert schedule.command == "poll" and schedule.interval_s == 3600
    assert schedule.only_between == (22 * 60, 6 * 60) and schedule.not_on == {5, 6}
    assert schedule.if_running == "cancel" and schedule.catch_up_limit == 100 and schedule.jitter_s == 30


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"only_between": "09:00-09:00"}, "start and end cannot be equal"),
        ({"only_between": "9am-5pm"}, "expected HH:MM"),
        ({"not_on": ["someday"]}, "unknown weekday"),
        ({"not_on": [8]}, "out of range"),
        ({"if_running": "kill"}, "if_running"),
    ],
)
def test_bad_constraints_are_config_errors_naming_the_schedule(
    make_config: Any, entry: dict[str, Any], message: str
) -> None:
    with pytest.raises(errors.ConfigError) as caught:
        make_config(plugins=plugins_with(echo_py=[{"id": "bad", "every": "1h", **entry}]))
    assert "plugins.echo_py.schedules[0]" in caught.value.message and message in caught.value.message

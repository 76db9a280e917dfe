"""Schedules under a controllable clock: a cron schedule fires, a restarted dispatcher neither
double-fires nor silently skips, `catch_up` true runs missed fires (bounded) while false skips
them (recorded), `if_running: skip` skips while the previous run is busy, GET /scheduler/jobs
shows next and last fire, and config errors name the schedule."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.core import errors, subjects
from services.core import schedules as specs
from services.dispatcher import schedules
from services.dispatcher.service import Dispatcher
from tests.support.infra import wait_until
from tests.support.stack import Stack

START = datetime(2026, 1, 1, 10, 0, 30, tzinfo=UTC)
TICK_S = 0.05


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def set(self, hh: int, mm: int, ss: int = 0) -> None:
        self.now = datetime(2026, 1, 1, hh, mm, ss, tzinfo=UTC)


class ClockedStack(Stack):
    """The in-process stack with a dispatcher on the test's clock; `restart_dispatcher` swaps it."""

    def __init__(self, config: Any, clock: Clock) -> None:
        super().__init__(config)
        self.clock = clock
        self.dispatcher = Dispatcher(config, clock=clock, schedule_interval_s=TICK_S)
        self.services[1] = self.dispatcher

    async def restart_dispatcher(self) -> None:
        await self.dispatcher.stop()
        self.dispatcher = Dispatcher(self.config, clock=self.clock, schedule_interval_s=TICK_S)
        self.services[1] = self.dispatcher
        await self.dispatcher.start()


@pytest.fixture
async def clocked() -> AsyncIterator[Callable[..., Any]]:
    started: list[ClockedStack] = []

    async def start(config: Any, clock: Clock) -> ClockedStack:
        s = ClockedStack(config, clock)
        started.append(s)
        await s.start()
        return s

    yield start
    for s in reversed(started):
        await s.stop()


async def decisions(s: Stack, plugin: str, schedule_id: str) -> list[tuple[str, dict[str, Any]]]:
    assert s.api.bus is not None
    history = await s.api.bus.history(subjects.EVENTS, subjects.schedule_event(plugin, schedule_id))
    return [(env.type, env.data) for _, env in history]


async def wait_decisions(s: Stack, plugin: str, schedule_id: str, count: int) -> list[tuple[str, dict[str, Any]]]:
    async def enough() -> Any:
        found = await decisions(s, plugin, schedule_id)
        return found if len(found) >= count else None

    return await wait_until(enough, timeout_s=15, what=f"{count} decisions of {plugin}.{schedule_id}")


def fired_at(found: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [data["at"][11:16] for kind, data in found if kind == "schedule.fired"]


def plugins_with(**schedules_of: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"echo": {}, "echo_py": {}, "napper": {}}
    for plugin, entries in schedules_of.items():
        out[plugin] = {"schedules": entries}
    return out


async def test_a_cron_schedule_fires_and_survives_a_restart(make_config: Any, clocked: Any) -> None:
    clock = Clock(START)
    config = make_config(
        plugins=plugins_with(
            echo_py=[{"id": "minutely", "cron": "* * * * *", "command": "poll", "payload": {"message": "tick"}}]
        )
    )
    s = await clocked(config, clock)
    found = await wait_decisions(s, "echo_py", "minutely", 1)
    assert found[0][0] == "schedule.armed"
    await s.client.get("/healthz")
    assert len(await decisions(s, "echo_py", "minutely")) == 1  # nothing fires before 10:01

    clock.set(10, 1, 5)
    found = await wait_decisions(s, "echo_py", "minutely", 2)
    assert fired_at(found) == ["10:01"]
    job_id = found[1][1]["job_id"]
    schedule = specs.parse_all(config.raw["plugins"])[0]
    assert job_id == schedules.job_id_for(schedule, datetime(2026, 1, 1, 10, 1, tzinfo=UTC))
    done = await s.client.wait_job(job_id)
    assert (
        done["status"] == "succeeded"
        and done["submitted_by"] == "schedule"
        and done["result"]["result"] == "Echoed: tick"
    )

    # a restart at the same moment: the fire is in the log, so nothing fires twice
    await s.restart_dispatcher()
    await wait_until(lambda: _ticked(s), what="the new scheduler's first ticks")
    await asyncio.sleep(6 * TICK_S)
    assert fired_at(await decisions(s, "echo_py", "minutely")) == ["10:01"]

    clock.set(10, 2, 1)
    found = await wait_decisions(s, "echo_py", "minutely", 3)
    assert fired_at(found) == ["10:01", "10:02"]
    assert len({data["job_id"] for kind, data in found if kind == "schedule.fired"}) == 2

    status, body = await s.client.get("/scheduler/jobs", token="test-jobs-ro-token-0")
    assert status == 200 and body["count"] == 1
    entry = body["jobs"][0]
    assert entry["plugin"] == "echo_py" and entry["id"] == "minutely" and entry["cron"] == "* * * * *"
    assert entry["command"] == "poll" and entry["last_fire_at"].startswith("2026-01-01T10:02:00")
    assert entry["next_fire_at"].startswith("2026-01-01T10:03:00") and entry["last_job_id"] == found[2][1]["job_id"]
    assert (await s.client.get("/scheduler/jobs", token=None))[0] == 401
    assert (await s.client.get("/scheduler/jobs", token="test-events-ro-token"))[0] == 403


async def _ticked(s: ClockedStack) -> bool:
    scheduler = s.dispatcher.scheduler
    return scheduler is not None and bool(scheduler._states)


async def test_catch_up_runs_missed_fires_and_without_it_they_are_skipped(make_config: Any, clocked: Any) -> None:
    clock = Clock(START)
    config = make_config(
        plugins=plugins_with(
            echo_py=[
                {"id": "eager", "cron": "* * * * *", "command": "poll", "catch_up": True},
                {"id": "lazy", "cron": "* * * * *", "command": "poll", "catch_up": False},
                {"id": "stale", "cron": "*/10 * * * *", "command": "poll"},
            ]
        )
    )
    s = await clocked(config, clock)
    for schedule_id in ("eager", "lazy", "stale"):
        await wait_decisions(s, "echo_py", schedule_id, 1)
    await s.dispatcher.stop()  # the dispatcher is down from 10:00:30 to 10:15:10
    clock.set(10, 15, 10)
    await s.restart_dispatcher()

    eager = await wait_decisions(s, "echo_py", "eager", 1 + 1 + specs.MAX_CATCH_UP)
    assert fired_at(eager) == [f"10:{m:02d}" for m in range(6, 16)]  # the latest MAX_CATCH_UP of 15 missed
    skipped = [data for kind, data in eager if kind == "schedule.skipped"]
    assert len(skipped) == 1 and skipped[0]["at"].startswith("2026-01-01T10:05") and skipped[0]["more_missed_before"]

    lazy = await wait_decisions(s, "echo_py", "lazy", 3)
    assert [kind for kind, _ in lazy] == ["schedule.armed", "schedule.skipped", "schedule.fired"]
    assert fired_at(lazy) == ["10:15"]  # on time (within the misfire grace): runs; the older ones do not

    stale = await wait_decisions(s, "echo_py", "stale", 2)
    assert [kind for kind, _ in stale] == ["schedule.armed", "schedule.skipped"]  # 10:10, five minutes late
    assert "catch_up: false" in stale[1][1]["reason"]

    for _, data in eager[2:]:
        assert (await s.client.wait_job(data["job_id"]))["status"] == "succeeded"
    clock.set(10, 20, 2)
    stale = await wait_decisions(s, "echo_py", "stale", 3)
    assert fired_at(stale) == ["10:20"]
    assert len(await decisions(s, "echo_py", "eager")) == 1 + 1 + specs.MAX_CATCH_UP + 5


async def test_if_running_skip_skips_while_the_previous_run_is_busy(
    make_config: Any, clocked: Any, tmp_path: Any
) -> None:
    clock = Clock(datetime(2026, 1, 1, 10, 0, 0, tzinfo=UTC))
    config = make_config(
        plugins=plugins_with(
            napper=[{"id": "nap", "every": "1m", "command": "poll", "payload": {"seconds": 2}, "if_running": "skip"}]
        )
    )
    s = await clocked(config, clock)
    await wait_decisions(s, "napper", "nap", 1)
    clock.set(10, 1, 0)
    found = await wait_decisions(s, "napper", "nap", 2)
    first_job = found[1][1]["job_id"]
    await s.client.wait_job(first_job, {"running"})
    clock.set(10, 2, 0)
    found = await wait_decisions(s, "napper", "nap", 3)
    assert found[2][0] == "schedule.skipped" and first_job in found[2][1]["reason"]
    assert (await s.client.wait_job(first_job))["status"] == "succeeded"
    clock.set(10, 3, 0)
    found = await wait_decisions(s, "napper", "nap", 4)
    assert fired_at(found) == ["10:01", "10:03"]


async def test_schedule_config_errors_name_the_schedule(make_config: Any) -> None:
    cases = [
        ({"id": "bad", "cron": "61 * * * *", "command": "poll"}, "invalid cron expression"),
        ({"id": "two", "every": "5m", "cron": "* * * * *", "command": "poll"}, "exactly one of"),
        ({"id": "cmd", "every": "5m", "command": "no_such_command"}, "no command 'no_such_command'"),
        ({"id": "zone", "cron": "0 7 * * *", "timezone": "Nowhere/City", "command": "poll"}, "unknown timezone"),
    ]
    for entry, message in cases:
        with pytest.raises(errors.ConfigError) as caught:
            make_config(plugins=plugins_with(echo_py=[{"id": "ok", "every": "1h", "command": "poll"}, entry]))
        assert "plugins.echo_py.schedules[1]" in caught.value.message and message in caught.value.message
    config = make_config(
        plugins=plugins_with(
            echo_py=[{"cron": "0 7 * * *", "timezone": "Europe/Berlin", "command": "poll", "jitter": "30s"}]
        )
    )
    (schedule,) = specs.parse_all(config.raw["plugins"])
    assert (
        schedule.id == "default"
        and schedule.next_after(START, anchor=START) == datetime(2026, 1, 2, 6, 0, tzinfo=UTC)
        and timedelta(0) <= schedule.jitter_for(START) < timedelta(seconds=30)
    )

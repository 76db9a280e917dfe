"""Schedule specs (services/core/schedules.py): parsing, due fire times, jitter, next fire, state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.core import schedules as specs

T0 = datetime(2026, 1, 1, 10, 0, 30, tzinfo=UTC)


def one(**entry: object) -> specs.Schedule:
    return specs.parse_one("echo", 0, {"command": "poll", **entry})


def test_every_fires_on_the_anchor_grid_and_reports_older_fires() -> None:
    every = one(id="e", every="10s")
    assert every.due(T0, T0 + timedelta(seconds=9), anchor=T0, limit=5) == ([], False)
    times, older = every.due(T0, T0 + timedelta(seconds=45), anchor=T0, limit=2)
    assert times == [T0 + timedelta(seconds=30), T0 + timedelta(seconds=40)] and older
    times, older = every.due(T0 + timedelta(seconds=20), T0 + timedelta(seconds=45), anchor=T0, limit=5)
    assert times == [T0 + timedelta(seconds=30), T0 + timedelta(seconds=40)] and not older
    assert every.next_after(T0 + timedelta(seconds=20), anchor=T0) == T0 + timedelta(seconds=30)


def test_cron_due_times_are_the_latest_ones_and_include_an_exact_match() -> None:
    cron = one(id="c", cron="* * * * *")
    times, older = cron.due(T0, T0 + timedelta(minutes=5), anchor=T0, limit=3)
    assert [t.minute for t in times] == [3, 4, 5] and older
    exact = datetime(2026, 1, 1, 10, 1, tzinfo=UTC)
    assert cron.due(T0, exact, anchor=T0, limit=3) == ([exact], False)
    assert cron.due(exact, exact + timedelta(seconds=59), anchor=T0, limit=3) == ([], False)
    berlin = one(id="b", cron="0 7 * * *", timezone="Europe/Berlin")
    assert berlin.next_after(T0, anchor=T0) == datetime(2026, 1, 2, 6, 0, tzinfo=UTC)


def test_one_shots_fire_once() -> None:
    at = one(id="a", at="2026-01-01T10:01:00Z")
    moment = datetime(2026, 1, 1, 10, 1, tzinfo=UTC)
    assert at.due(T0, T0 + timedelta(minutes=2), anchor=T0, limit=2) == ([moment], False)
    assert at.due(moment, T0 + timedelta(minutes=2), anchor=T0, limit=2) == ([], False)
    assert at.next_after(moment, anchor=T0) is None
    after = one(id="f", after="90s")
    assert after.due(T0, T0 + timedelta(minutes=2), anchor=T0, limit=2) == ([T0 + timedelta(seconds=90)], False)


def test_jitter_is_deterministic_and_bounded() -> None:
    jittered = one(id="j", every="1m", jitter="30s")
    delays = {jittered.jitter_for(T0 + timedelta(minutes=k)) for k in range(20)}
    assert len(delays) > 1 and all(timedelta(0) <= d < timedelta(seconds=30) for d in delays)
    assert jittered.jitter_for(T0) == one(id="j", every="1m", jitter="30s").jitter_for(T0)
    assert one(id="n", every="1m").jitter_for(T0) == timedelta(0)


def test_state_round_trips_through_its_event_data_and_gives_the_next_fire() -> None:
    every = one(id="e", every="1m")
    fired = T0 + timedelta(minutes=2)
    state = specs.State(seq=7, at=fired, anchor=T0, last_fired_at=fired, last_job_id="job-1")
    again = specs.State.from_event(7, "schedule.fired", state.data())
    assert again == specs.State(
        seq=7, at=fired, anchor=T0, last_fired_at=fired, last_job_id="job-1", last_type="schedule.fired"
    )
    assert specs.next_fire(every, again, T0) == T0 + timedelta(minutes=3)
    assert specs.next_fire(every, None, T0) == T0 + timedelta(minutes=1)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"cron": "61 * * * *"}, "invalid cron expression"),
        ({"cron": "* * * * *", "every": "1m"}, "exactly one of every, cron, at, after (found every, cron)"),
        ({}, "(found none)"),
        ({"at": "tomorrow"}, "RFC 3339"),
        ({"at": "2026-01-01T10:00:00"}, "zone"),
        ({"every": "0s"}, "positive"),
        ({"every": "soon"}, "not a duration"),
        ({"every": "1m", "jitter": "lots"}, "not a duration"),
        ({"every": "1m", "timezone": "Mars/Olympus"}, "unknown timezone"),
        ({"every": "1m", "id": "a.b"}, "schedule id"),
    ],
)
def test_invalid_schedules_name_the_place(entry: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        specs.parse_all(
            {"echo": {"schedules": [{"id": "ok", "every": "1h", "command": "poll"}, {"command": "poll", **entry}]}}
        )
    assert str(caught.value).startswith("plugins.echo.schedules[1]: ") and message in str(caught.value)


def test_duplicate_ids_and_unknown_commands() -> None:
    with pytest.raises(ValueError, match=r"plugins.echo.schedules\[1\]: duplicate schedule id 'default'"):
        specs.parse_all(
            {"echo": {"schedules": [{"every": "1m", "command": "poll"}, {"cron": "* * * * *", "command": "poll"}]}}
        )
    parsed = specs.parse_all({"echo": {"schedules": [{"id": "x", "every": "1m", "command": "nope"}]}})
    with pytest.raises(ValueError, match="plugin 'echo' has no command 'nope'"):
        specs.check_commands(parsed, {"echo": {"poll": object()}})
    specs.check_commands(parsed, {})  # a plugin not on disk is not checked

"""The two-phase reload (services/core/reload_coordinator.py, services/core/reloads.py) on a real
nats-server, with participants whose `apply` only records: who applied what, and when, is exact.

Each participant has its own NATS connection, as each service process has."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from services.core import bus as bus_mod
from services.core import config as config_mod
from services.core import members, reload_coordinator, reloads, subjects
from tests.support import stack


class Service:
    """A participant's service: its config and every config applied to it, in order."""

    def __init__(self, config: config_mod.Config) -> None:
        self.config = config
        self.applied: list[str] = []
        self.log: list[tuple[str, str]] = []
        self.gate: asyncio.Event | None = None  # when set, apply waits for it

    async def apply(self, fresh: config_mod.Config) -> None:
        if self.gate is not None:
            await self.gate.wait()
        self.config = fresh
        self.applied.append(config_mod.fingerprint(fresh))


class LoggedParticipant(reloads.Participant):
    """Records when it stages and applies, to check that two reloads never interleave."""

    def __init__(self, bus: bus_mod.Bus, service: Service, role: str) -> None:
        async def apply(fresh: config_mod.Config) -> None:
            await service.apply(fresh)
            service.log.append(("apply", config_mod.fingerprint(fresh)))

        super().__init__(bus, role=role, source=f"{role}/test", current=lambda: service.config, apply=apply)
        self.service = service

    async def stage(self, txn: str) -> reloads.Vote:
        self.service.log.append(("stage", txn))
        await asyncio.sleep(0)  # let a concurrent reload run here if nothing holds it off
        return await super().stage(txn)


Start = Callable[..., Any]


@pytest.fixture
async def start(nats_url: str) -> AsyncIterator[Start]:
    """start(config, role) → (participant, service): started and registered, stopped after the test."""
    running: list[tuple[reloads.Participant, asyncio.Event, asyncio.Task[None], bus_mod.Bus]] = []

    async def start(config: config_mod.Config, role: str) -> tuple[LoggedParticipant, Service]:
        bus = await bus_mod.open_for(config, name=f"{role}-test")
        service = Service(config)
        participant = LoggedParticipant(bus, service, role)
        await participant.start()
        stop = asyncio.Event()
        running.append((participant, stop, asyncio.create_task(participant.run(stop)), bus))
        return participant, service

    yield start
    for _, stop, task, bus in running:
        stop.set()
        await task
        await bus.close()


def rewrite(config: config_mod.Config, **changes: Any) -> None:
    """Write the test config's file again with `changes` to the document."""
    assert config.path is not None
    doc = stack.config_doc(**changes)
    Path(config.path).write_text(yaml.safe_dump(doc, sort_keys=False))


async def test_every_participant_applies_before_the_reload_returns(make_config: Any, start: Start) -> None:
    config = make_config()
    api, api_service = await start(config, "api")
    _, dispatcher = await start(config, "dispatcher")
    _, runner = await start(config, "runner")
    rewrite(config, plugins={"echo": {"parallelism": 1}, "echo_py": {}})

    outcome = await reload_coordinator.Coordinator(api.bus, api).reload()

    assert outcome.pending == []
    assert sorted(a["service"] for a in outcome.applied) == ["api", "dispatcher", "runner"]
    assert outcome.applied[0]["service"] == "api"  # this API first
    for service in (api_service, dispatcher, runner):
        assert service.applied == [outcome.fingerprint]
        assert service.config.plugin("echo").parallelism == 1
    last = await api.bus.last_message(subjects.EVENTS, reloads.EVENT_SUBJECT)
    assert last is not None and last[1].data["txn"] == outcome.txn
    assert sorted(last[1].data["services"]) == sorted(a["instance"] for a in outcome.applied)
    assert {r["role"]: r["fingerprint"] for r in await members.alive(api.bus)} == dict.fromkeys(
        ["api", "dispatcher", "runner"], outcome.fingerprint
    )


async def test_a_participant_reading_its_own_different_copy_refuses_it_for_everyone(
    make_config: Any, start: Start, tmp_path: Path
) -> None:
    config = make_config()
    copy = tmp_path / "runner-copy.yaml"
    copy.write_text(Path(config.path).read_text())
    api, api_service = await start(config, "api")
    dispatcher, dispatcher_service = await start(config, "dispatcher")
    _, runner = await start(config_mod.load(copy, env={"NATS_URL": str(config.nats_url)}), "runner")
    rewrite(config, plugins={"echo": {"parallelism": 1}, "echo_py": {}})  # the runner's copy stays as it was

    with pytest.raises(reload_coordinator.Refused) as refused:
        await reload_coordinator.Coordinator(api.bus, api).reload()

    assert "runner/test (runner, member runner-" in refused.value.message
    assert "reads the configuration differently" in refused.value.message
    assert [f["service"] for f in refused.value.failed] == ["runner"]
    assert api_service.applied == dispatcher_service.applied == runner.applied == []
    assert api.staged == {} and dispatcher.staged == {}  # the abort was answered before the refusal


async def test_an_invalid_file_is_refused_before_anyone_is_asked(make_config: Any, start: Start) -> None:
    config = make_config()
    api, _ = await start(config, "api")
    _, dispatcher = await start(config, "dispatcher")
    Path(config.path).write_text("plugins: {echo: {parallelism: nope}}\n")
    with pytest.raises(reload_coordinator.Refused) as refused:
        await reload_coordinator.Coordinator(api.bus, api).reload()
    assert refused.value.message.startswith(reload_coordinator.NOT_RELOADED)
    assert "plugins.echo.parallelism" in refused.value.message
    assert dispatcher.log == []  # never asked to prepare


async def test_a_member_that_does_not_answer_refuses_the_reload(make_config: Any, start: Start) -> None:
    """A member whose heartbeat is fresh but that does not answer (it died without a goodbye)."""
    config = make_config()
    api, api_service = await start(config, "api")
    _, dispatcher = await start(config, "dispatcher")
    ghost = members.record(
        member="runner-ghost-1",
        role="runner",
        source="runner/ghost-1",
        fingerprint="0" * 16,
        interval_s=5.0,
        started_at="2026-01-01T00:00:00Z",
    )
    await members.beat(api.bus, ghost)
    rewrite(config, plugins={"echo": {"parallelism": 1}, "echo_py": {}})

    with pytest.raises(reload_coordinator.Refused) as refused:
        await reload_coordinator.Coordinator(api.bus, api, prepare_timeout_s=2.0).reload()

    assert "runner/ghost-1 (runner, member runner-ghost-1): did not answer within 2 s" in refused.value.message
    assert api_service.applied == dispatcher.applied == []


async def test_a_participant_slow_to_apply_is_pending_and_applies_later(make_config: Any, start: Start) -> None:
    config = make_config()
    api, _ = await start(config, "api")
    _, dispatcher = await start(config, "dispatcher")
    slow, runner = await start(config, "runner")
    runner.gate = asyncio.Event()
    rewrite(config, plugins={"echo": {"parallelism": 1}, "echo_py": {}})

    outcome = await reload_coordinator.Coordinator(api.bus, api, ack_timeout_s=2.0).reload()

    assert sorted(a["service"] for a in outcome.applied) == ["api", "dispatcher"]
    (pending,) = outcome.pending
    assert pending["service"] == "runner" and "no ack within 2 s" in pending["error"]
    assert dispatcher.applied == [outcome.fingerprint] and runner.applied == []
    # the announcement reached the runner: it applies the staged config as soon as it can
    acked: asyncio.Future[reloads.Vote] = asyncio.get_running_loop().create_future()

    async def on_ack(msg: Any) -> None:
        vote = reloads.Vote.decode(msg.data)
        if vote is not None and not acked.done():
            acked.set_result(vote)

    sub = await api.bus.nc.subscribe(subjects.reload_ack(outcome.txn), cb=on_ack)
    runner.gate.set()
    vote = await asyncio.wait_for(acked, timeout=10)
    await sub.unsubscribe()
    assert vote.ok and vote.member == slow.id and runner.applied == [outcome.fingerprint]


async def test_reloads_from_two_apis_do_not_interleave(make_config: Any, start: Start) -> None:
    config = make_config()
    first, first_service = await start(config, "api")
    second, second_service = await start(config, "api")
    _, dispatcher = await start(config, "dispatcher")
    rewrite(config, plugins={"echo": {"parallelism": 1}, "echo_py": {}})

    outcomes = await asyncio.gather(
        reload_coordinator.Coordinator(first.bus, first).reload(),
        reload_coordinator.Coordinator(second.bus, second).reload(),
    )

    assert all(o.pending == [] and len(o.applied) == 3 for o in outcomes)
    for service in (first_service, second_service, dispatcher):
        # one reload staged and applied before the other was staged anywhere
        kinds = [kind for kind, _ in service.log]
        assert kinds == ["stage", "apply", "stage", "apply"], service.log


async def test_the_reload_lease(make_config: Any, start: Start) -> None:
    config = make_config()
    api, _ = await start(config, "api")
    kv = await api.bus.kv(subjects.KV_AGENTS)
    live = {"holder": "api/elsewhere", "since": time.time(), "until": time.time() + 60}
    await kv.put(reload_coordinator.LOCK_KEY, orjson.dumps(live))
    with pytest.raises(reload_coordinator.Refused) as refused:
        async with reload_coordinator.lease(api.bus, "api/here", wait_s=0.2):
            pass
    assert "another reload is in progress (held by api/elsewhere)" in refused.value.message

    expired = {**live, "until": time.time() - 1}  # its holder died mid-reload
    await kv.put(reload_coordinator.LOCK_KEY, orjson.dumps(expired))
    async with reload_coordinator.lease(api.bus, "api/here", wait_s=0.2):
        held = orjson.loads((await kv.get(reload_coordinator.LOCK_KEY)).value or b"{}")
        assert held["holder"] == "api/here"
    async with reload_coordinator.lease(api.bus, "api/again", wait_s=0.2):  # released
        pass


async def test_a_staged_config_whose_commit_was_missed_resolves_from_the_event_log(
    make_config: Any, nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A participant that staged a reload but never heard its outcome asks the EVENTS stream."""
    monkeypatch.setattr(reloads, "STAGE_TTL_S", 0.0)
    config = make_config()
    bus = await bus_mod.open_for(config, name="resolver-test")
    try:
        service = Service(config)
        participant = reloads.Participant(
            bus, role="runner", source="runner/test", current=lambda: service.config, apply=service.apply
        )  # not started: it hears nothing
        rewrite(config, plugins={"echo": {"parallelism": 1}, "echo_py": {}})
        announced = await participant.stage("txn-announced")
        assert announced.ok and announced.fingerprint
        assert (await participant.stage("txn-dropped")).ok
        await bus.publish(
            *reloads.reloaded_event(
                announced.fingerprint,
                str(config.path),
                source="api/test",
                txn="txn-announced",
                services=[participant.id],
            )
        )
        await participant.resolve_expired()
        assert service.applied == [announced.fingerprint] and participant.applied == "txn-announced"
        assert participant.staged == {}  # txn-dropped was never announced
    finally:
        await bus.close()

"""Job lifecycle through HTTP: retries with backoff, dead letters, permanent failures,
timeouts, cancel, the retry endpoint, Idempotency-Key, dedupe and the circuit breaker."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from services.core import envelope, subjects
from tests.support import infra
from tests.support.stack import TOKENS, Client, Stack

FAST_RETRY = {"max_attempts": 3, "backoff_base": "0.2s"}


def plugins(**extra: Any) -> dict[str, Any]:
    return {"echo": {}, "echo_py": {}, **extra}


async def event_types(s: Stack, job_id: str) -> list[str]:
    assert s.api.bus is not None
    return [env.type for _, env in await s.api.bus.history(subjects.EVENTS, subjects.job_events(job_id))]


async def attempts(s: Stack, job_id: str) -> list[dict[str, Any]]:
    assert s.api.bus is not None and s.api.pool is not None
    await s.projector.wait_for(await s.api.bus.stream_last_seq(subjects.EVENTS))
    rows = await s.api.pool.fetch(
        "SELECT attempt, status, last_error FROM job_logs WHERE job_id = $1 ORDER BY attempt", job_id
    )
    return [dict(r) for r in rows]


async def test_failed_attempts_are_retried_with_backoff_until_success(
    make_config: Any, start_stack: Any, tmp_path: Path
) -> None:
    s = await start_stack(make_config(plugins=plugins(flaky={"retry": FAST_RETRY})))
    job_id = await s.client.submit("flaky", "poll", {"counter_file": str(tmp_path / "n"), "succeed_on": 3})
    done = await s.client.wait_job(job_id)
    assert done["status"] == "succeeded" and done["attempt"] == 3 and done["result"]["result"] == {"calls": 3}
    types = await event_types(s, job_id)
    assert types.count("job.failed") == 2 and types.count("job.retry_scheduled") == 2
    assert types.count("job.succeeded") == 1
    rows = await attempts(s, job_id)
    assert [(r["attempt"], r["status"]) for r in rows] == [(1, "failed"), (2, "failed"), (3, "succeeded")]
    assert "flaky failure on call 1" in rows[0]["last_error"]


async def test_retries_exhausted_dead_letters_the_job(make_config: Any, start_stack: Any, tmp_path: Path) -> None:
    s = await start_stack(make_config(plugins=plugins(flaky={"retry": FAST_RETRY})))
    job_id = await s.client.submit("flaky", "poll", {"counter_file": str(tmp_path / "n")})
    done = await s.client.wait_job(job_id, {"dead"})
    assert done["attempt"] == 3 and "flaky failure on call 3" in done["last_error"]
    assert (tmp_path / "n").read_text() == "3"
    types = await event_types(s, job_id)
    assert types.count("job.started") == 3 and types[-1] == "job.dead"


@pytest.mark.parametrize("mode", ["exit78", "no_retry"])
async def test_permanent_failures_are_not_retried(
    make_config: Any, start_stack: Any, tmp_path: Path, mode: str
) -> None:
    s = await start_stack(make_config(plugins=plugins(flaky={"retry": FAST_RETRY})))
    job_id = await s.client.submit("flaky", "poll", {"counter_file": str(tmp_path / "n"), "mode": mode})
    done = await s.client.wait_job(job_id, {"dead"})
    assert done["attempt"] == 1 and (tmp_path / "n").read_text() == "1"
    assert "job.retry_scheduled" not in await event_types(s, job_id)


async def test_timeouts_are_timed_out_attempts_then_dead(make_config: Any, start_stack: Any, tmp_path: Path) -> None:
    s = await start_stack(
        make_config(
            plugins=plugins(flaky={"retry": {"max_attempts": 2, "backoff_base": "0.1s"}, "timeouts": {"poll": "0.5s"}})
        )
    )
    job_id = await s.client.submit("flaky", "poll", {"counter_file": str(tmp_path / "n"), "mode": "sleep"})
    done = await s.client.wait_job(job_id, {"dead"})
    assert done["attempt"] == 2
    rows = await attempts(s, job_id)
    assert [r["status"] for r in rows] == ["timed_out", "timed_out"]
    assert "deadline" in done["last_error"]


async def test_cancel_a_queued_job_never_runs_it(make_config: Any, start_stack: Any, tmp_path: Path) -> None:
    s = await start_stack(make_config(plugins=plugins(napper={"parallelism": 1})))
    marker = tmp_path / "started"
    blocker = await s.client.submit("napper", "poll", {"seconds": 2, "marker": str(marker)})
    queued = await s.client.submit("napper", "poll", {"seconds": 0, "marker": str(marker)})
    await s.client.wait_job(blocker, {"running"})
    status, body = await s.client.post(f"/job/{queued}/cancel", token=TOKENS["jobs_rw"][0])
    assert status == 202 and body["status"] == "cancelling"
    done = await s.client.wait_job(queued, {"cancelled"})
    assert done["started_at"] is None
    await s.client.wait_job(blocker)
    assert queued not in marker.read_text()
    status, body = await s.client.post(f"/job/{queued}/cancel")
    assert status == 409 and "cancelled" in body["error"]


@pytest.mark.parametrize("claim", ["compare_and_set", "after_preflight"])
async def test_cancel_that_races_the_runners_claim_still_stops_the_job(
    make_config: Any, start_stack: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, claim: str
) -> None:
    """The dispatcher still sees the job queued (no `started` yet) while the runner is about to claim it: the
    cancel it records must win, or the job runs after its `cancelled` (seen once in CI). A first delivery
    claims with a compare-and-set against the job's `queued` (the cancel lands just before it: the claim
    fails and the runner never starts the attempt); any other delivery reads the log in preflight first (the
    cancel lands between that read and the claim: the signal must reach the runner)."""
    from services.runner import preflight
    from services.runner import service as runner_service

    s = await start_stack(make_config(plugins=plugins(napper={})))
    checked, release = asyncio.Event(), asyncio.Event()
    if claim == "compare_and_set":
        from services.dispatcher import publishing

        monkeypatch.setattr(publishing, "CLAIM_AFTER_MIN", 1)  # this one job's work item carries claim_after
        original_claim = runner_service.Runner._claim_unread

        async def held_before_claiming(self: Any, *args: Any, **kwargs: Any) -> Any:
            checked.set()
            await release.wait()  # the cancel lands here: before the compare-and-set
            return await original_claim(self, *args, **kwargs)

        monkeypatch.setattr(runner_service.Runner, "_claim_unread", held_before_claiming)
    else:
        original = preflight.check

        async def no_unread_claim(self: Any, *args: Any, **kwargs: Any) -> None:
            return None  # as for a redelivery: preflight reads the log first

        async def held_after_reading(*args: Any, **kwargs: Any) -> Any:
            verdict = await original(*args, **kwargs)
            checked.set()
            await release.wait()  # the cancel lands here: after preflight read the log, before the claim
            return verdict

        monkeypatch.setattr(runner_service.Runner, "_claim_unread", no_unread_claim)
        monkeypatch.setattr(preflight, "check", held_after_reading)
    marker = tmp_path / "started"
    job_id = await s.client.submit("napper", "poll", {"seconds": 20, "marker": str(marker)})
    await asyncio.wait_for(checked.wait(), timeout=10)
    status, _ = await s.client.post(f"/job/{job_id}/cancel")
    assert status == 202

    async def decided() -> bool:
        return {"job.cancel_requested", "job.cancelled"} <= set(await event_types(s, job_id))

    await infra.wait_until(decided, what="the dispatcher's cancel of the (to it) queued job")

    async def signal_held() -> bool:
        # the signal follows the stored decision: release the claim only once this runner holds it
        cancel = s.runner.running.get(job_id)
        return cancel is not None and cancel.is_set()

    await infra.wait_until(signal_held, what="the runner to hold the job's cancel signal")
    release.set()
    assert s.api.bus is not None

    async def runners_outcome() -> str | None:
        for _, env in await s.api.bus.history(subjects.EVENTS, subjects.job_events(job_id)):
            if env.id.startswith(f"{job_id}:1:") and env.type != "job.started":
                return env.type
        return None

    if claim == "compare_and_set":
        # the claim fails against the cancel, and preflight finds it decided: the attempt never starts
        await infra.wait_until(lambda: _not_held(s, job_id), timeout_s=10, what="the runner to let the job go")
        assert "job.started" not in await event_types(s, job_id)
    else:
        # the runner records its attempt's end: cancelled at once, not the 20 s nap run to success
        assert await infra.wait_until(runners_outcome, timeout_s=10, what="the runner's outcome") == "job.cancelled"
    assert not marker.exists(), "the plugin started after its cancel was recorded"
    done = await s.client.wait_job(job_id, {"cancelled"}, timeout_s=10)
    assert done["status"] == "cancelled"


async def _not_held(s: Any, job_id: str) -> bool:
    return job_id not in s.runner.running


async def test_cancel_a_running_job_stops_the_plugin(make_config: Any, start_stack: Any, tmp_path: Path) -> None:
    s = await start_stack(make_config(plugins=plugins(napper={})))
    job_id = await s.client.submit("napper", "poll", {"seconds": 30})
    await s.client.wait_job(job_id, {"running"})
    status, _ = await s.client.post(f"/job/{job_id}/cancel")
    assert status == 202
    done = await s.client.wait_job(job_id, {"cancelled"}, timeout_s=15)
    assert done["completed_at"] is not None
    assert "job.retry_scheduled" not in await event_types(s, job_id)


async def test_cancel_scopes_and_unknown_jobs(client: Client) -> None:
    job_id = await client.submit("echo", "poll", {})
    await client.wait_job(job_id)
    status, _ = await client.post(f"/job/{job_id}/cancel", token=TOKENS["jobs_ro"][0])
    assert status == 403
    status, body = await client.post(f"/job/{job_id}/cancel")
    assert status == 409 and body["status"] == "succeeded"
    status, _ = await client.post("/job/nope/cancel")
    assert status == 404


async def test_retry_endpoint_requeues_a_dead_job_linked_to_the_original(
    make_config: Any, start_stack: Any, tmp_path: Path
) -> None:
    s = await start_stack(make_config(plugins=plugins(flaky={"retry": {"max_attempts": 1}})))
    counter = tmp_path / "n"
    job_id = await s.client.submit("flaky", "poll", {"counter_file": str(counter), "succeed_on": 2})
    await s.client.wait_job(job_id, {"dead"})
    # re-running flaky.poll (a write command) needs what POST /plugin/flaky/poll needs, besides jobs:rw
    status, body = await s.client.post(f"/job/{job_id}/retry", token=TOKENS["jobs_rw"][0])
    assert status == 403 and body["required_scopes"] == ["plugin:rw"], body
    status, body = await s.client.post(f"/job/{job_id}/retry", token=TOKENS["laddr_rw"][0])
    assert status == 202 and body["retry_of"] == job_id and body["job_id"] != job_id
    again = await s.client.wait_job(body["job_id"])
    assert again["status"] == "succeeded" and again["submitted_by"] == "retry"
    assert "job.requeued" in await event_types(s, job_id)
    status, body = await s.client.post(f"/job/{body['job_id']}/retry")
    assert status == 409
    status, _ = await s.client.post(f"/job/{job_id}/retry", token=TOKENS["plugin_rw"][0])
    assert status == 403


async def test_idempotency_key_returns_the_first_response(hr: Stack, client: Client) -> None:
    key = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    first = await client.post("/plugin/echo/poll", json={"payload": {"message": "once"}}, headers=key)
    second = await client.post("/plugin/echo/poll", json={"payload": {"message": "once"}}, headers=key)
    assert first[0] == second[0] == 202 and first[1] == second[1]
    other_token = await client.post(
        "/plugin/echo/poll", json={"payload": {"message": "once"}}, headers=key, token=TOKENS["plugin_rw"][0]
    )
    assert other_token[0] == 202 and other_token[1]["job_id"] != first[1]["job_id"]
    status, body = await client.post("/plugin/echo/poll", json={"payload": {"message": "different"}}, headers=key)
    assert status == 409 and "different request" in body["error"]
    await client.wait_job(first[1]["job_id"])
    assert hr.api.bus is not None
    history = await hr.api.bus.history(subjects.COMMANDS, "cmd.job.*.submit")
    submitted = [env.data["payload"] for _, env in history]
    assert submitted.count({"message": "once"}) == 2  # one per token, not one per request


async def test_dedupe_key_suppresses_a_second_job_and_records_it(hr: Stack, client: Client) -> None:
    assert hr.api.bus is not None
    key = f"dk-{uuid.uuid4()}"
    ids = []
    for _ in range(2):
        job_id = envelope.new_id()
        cmd = envelope.make(
            "job.submit",
            source="test",
            job_id=job_id,
            id=f"{job_id}:submit",
            data={"plugin": "echo_py", "command": "poll", "payload": {}, "submitted_by": "route", "dedupe_key": key},
        )
        await hr.api.bus.publish(subjects.job_command(job_id, "submit"), cmd)
        ids.append(job_id)
    first = await client.wait_job(ids[0])
    second = await client.wait_job(ids[1])
    assert first["status"] == "succeeded"
    assert second["status"] == "skipped" and ids[0] in second["last_error"] and second["started_at"] is None


async def test_circuit_breaker_opens_skips_then_half_opens(make_config: Any, start_stack: Any, tmp_path: Path) -> None:
    s = await start_stack(
        make_config(
            plugins=plugins(
                flaky={"retry": {"max_attempts": 1}, "circuit_breaker": {"threshold": 3, "reset_after": "1s"}}
            )
        )
    )
    for i in range(3):
        job_id = await s.client.submit("flaky", "poll", {"counter_file": str(tmp_path / f"n{i}")})
        await s.client.wait_job(job_id, {"dead"})
    skipped = await s.client.submit("flaky", "poll", {"counter_file": str(tmp_path / "s"), "succeed_on": 1})
    done = await s.client.wait_job(skipped, {"skipped"})
    assert "circuit open" in done["last_error"] and not (tmp_path / "s").exists()

    async def half_open_trial_succeeds() -> bool:
        job_id = await s.client.submit("flaky", "poll", {"counter_file": str(tmp_path / "t"), "succeed_on": 1})
        return (await s.client.wait_job(job_id))["status"] == "succeeded"

    assert await infra.wait_until(half_open_trial_succeeds, timeout_s=10, interval_s=0.3, what="breaker half-open")
    job_id = await s.client.submit("flaky", "poll", {"counter_file": str(tmp_path / "u"), "succeed_on": 1})
    assert (await s.client.wait_job(job_id))["status"] == "succeeded"  # closed again


async def test_a_cancel_decided_in_the_same_batch_as_its_submit_stops_the_job(make_config: Any, tmp_path: Path) -> None:
    """The dispatcher was down while a client submitted and at once cancelled: both commands reach it in one
    batch, and the cancel must see the job its submit just decided (not yet in the log), or the job runs."""
    from services.api.service import Api
    from services.dispatcher.service import Dispatcher
    from services.projector.service import Projector
    from services.runner.service import Runner

    config = make_config(plugins=plugins(napper={}))
    up = [Projector(config), Runner(config), Api(config, port=0)]
    for service in up:
        await service.start()
    api = up[-1]
    assert isinstance(api, Api)
    client = Client(api.url)
    dispatcher = Dispatcher(config)
    try:
        marker = tmp_path / "started"
        status, body = await client.post("/plugin/napper/poll", json={"payload": {"seconds": 0, "marker": str(marker)}})
        assert status == 202
        job_id = body["job_id"]
        status, _ = await client.post(f"/job/{job_id}/cancel")
        assert status == 202
        await dispatcher.start()
        done = await client.wait_job(job_id, {"cancelled", "succeeded"}, timeout_s=15)
        assert done["status"] == "cancelled"
        assert api.bus is not None
        types = [env.type for _, env in await api.bus.history(subjects.EVENTS, subjects.job_events(job_id))]
        assert "job.started" not in types and not marker.exists()
    finally:
        await client.close()
        for service in [dispatcher, *reversed(up)]:
            await service.stop()

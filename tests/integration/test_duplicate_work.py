"""A work item published again after a nats-server restart must not run its plugin again.

Found by the chaos run (tests/chaos): a dispatcher killed after publishing a job's work item but
before acking the submit gets the submit redelivered and publishes the same work item again
(same Nats-Msg-Id). JetStream drops that duplicate only while it remembers the id — and a
restarted nats-server rebuilds its duplicate window from the messages still stored, so the id of
a work item already consumed (removed from the WORK work queue) is forgotten. The runner takes
the duplicate as a first delivery and runs the plugin a second time for an attempt that has
already succeeded (its second job.started/job.succeeded are dropped as duplicates by EVENTS, so
the log shows one run while the side effect happened twice).
"""

from __future__ import annotations

from pathlib import Path

from services.core import subjects
from services.dispatcher import decisions
from tests.support import infra, stack


async def test_a_work_item_published_again_after_a_nats_restart_does_not_run_again(
    tmp_path: Path, database_url: str
) -> None:
    nats = infra.NatsServer(tmp_path / "nats")
    await nats.start()
    config = stack.write_config(
        tmp_path / "c.yaml", stack.config_doc(plugins={"napper": {}}), nats_url=nats.url, database_url=database_url
    )
    s = await stack.Stack(config).start()
    assert s.client is not None and s.api.bus is not None
    bus = s.api.bus
    marker = tmp_path / "runs"
    try:
        job_id = await s.client.submit("napper", "poll", {"seconds": 0.1, "marker": str(marker)})
        done = await s.client.wait_job(job_id, timeout_s=30)
        assert done["status"] == "succeeded" and len(marker.read_text().splitlines()) == 1
        queued = await bus.last_message(subjects.EVENTS, subjects.job_event(job_id, "queued"))
        assert queued is not None
        # what a dispatcher that re-decides the redelivered submit publishes: the same work item, same id
        subject, item = decisions.work_item(
            job_id, queued[1].data, attempt=1, config=config, source="dispatcher/redelivered", correlation_id=job_id
        )

        await nats.kill()
        await nats.restart()
        await stack.wait_healthy(s.url, timeout_s=30)
        await bus.publish(subject, item)

        async def taken() -> bool:  # acked (ran or skipped) by the runner
            return await bus.pending_work() == 0

        await infra.wait_until(taken, timeout_s=30, what="the runner to take the work item")
        runs = marker.read_text().splitlines()
        assert len(runs) == 1, f"the plugin ran again for an attempt that had already succeeded: {runs}"
        succeeded = subjects.job_event(job_id, "succeeded")
        info = await bus.js.stream_info(subjects.EVENTS, subjects_filter=succeeded)
        assert (info.state.subjects or {}).get(succeeded) == 1
    finally:
        await s.stop()
        await nats.stop()

"""A runner that is stopped (SIGTERM, a rolling deploy) lets its running attempts finish for up to
`STOP_WAIT_S` (services/runner/service.py) before it lets go of them: an attempt longer than the service
lifecycle's default stop timeout (10 s) still completes as its first attempt, nothing is lost or run again."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from services.core import lifecycle
from services.runner import service as runner_service
from tests.support import eventlog
from tests.support.infra import wait_until

pytestmark = pytest.mark.timeout(90)

NAP_S = lifecycle.Service.stop_timeout_s + 3.0  # longer than a service's default stop timeout


async def test_a_stopping_runner_lets_a_long_attempt_finish(
    make_config: Any, start_stack: Any, tmp_path: Path, nats_url: str
) -> None:
    assert NAP_S < runner_service.STOP_WAIT_S < runner_service.Runner.stop_timeout_s
    s = await start_stack(make_config(plugins={"napper": {"timeouts": {"poll": "60s"}}}))
    marker = tmp_path / "started"
    job_id = await s.client.submit("napper", "poll", {"seconds": NAP_S, "marker": str(marker)})

    async def started() -> bool:
        return marker.exists()

    await wait_until(started, timeout_s=20, interval_s=0.05, what="the nap to start")
    t0 = time.monotonic()
    await s.runner.stop()
    waited = time.monotonic() - t0
    assert NAP_S - 1.0 < waited < runner_service.Runner.stop_timeout_s, waited
    done = await s.client.wait_job(job_id, timeout_s=20)
    assert done["status"] == "succeeded" and done["attempt"] == 1, done
    history = eventlog.fold(await eventlog.read_all(nats_url))[job_id]
    assert history.started == [1] and history.succeeded == [1] and not history.lost, history.trail

"""A stack whose last service fails to start stops the ones it had started (nothing leaks into the next test)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from services.api.service import Api
from tests.support import stack


async def test_failed_start_stops_the_started_services(
    make_config: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_start = Api.start

    async def start_then_fail(self: Api) -> None:
        await real_start(self)  # connected and listening: the failure must undo that too
        raise RuntimeError("api failed to start")

    monkeypatch.setattr(Api, "start", start_then_fail)
    s = stack.Stack(make_config())
    with pytest.raises(RuntimeError, match="api failed to start"):
        await s.start()
    for service in s.services:
        assert service.stop_event.is_set(), service.name
        assert not service._tasks, (service.name, list(service._tasks))
        assert service.bus is not None and service.bus.nc.is_closed, service.name
    for service in (s.projector, s.api):
        assert service.pool is not None and service.pool.is_closing(), service.name

"""Service lifecycle shared by the four actors: named background tasks, a stop event,
and a monitor that stops the service when one task dies. `run()` never owns the loop,
so `headrace up` composes several services in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Iterable
from typing import Any, Self

from services.core import logging

log = logging.get("lifecycle")


async def finish_or_cancel(tasks: Iterable[asyncio.Task[Any]], timeout_s: float) -> None:
    """Let `tasks` finish for up to `timeout_s`; cancel the ones still running and wait until they have."""
    tasks = list(tasks)
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=timeout_s)
    for task in pending:
        task.cancel()
    for task in pending:
        with contextlib.suppress(BaseException):
            await task


class Service:
    """Base: subclasses implement `start()` (connect, spawn tasks) and `close()` (release)."""

    name = "service"
    #: how long `stop()` lets the tasks finish before it cancels them
    stop_timeout_s = 10.0

    def __init__(self) -> None:
        self.stop_event = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self.failure: BaseException | None = None

    def spawn(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=f"{self.name}:{name}")
        self._tasks[name] = task
        task.add_done_callback(self._on_task_done)
        return task

    def _on_task_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or self.stop_event.is_set():
            return
        exc = task.exception()
        if exc is not None:
            log.error("task_died", service=self.name, task=task.get_name(), error=repr(exc))
            self.failure = exc
            self.stop_event.set()

    async def start(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    async def close(self) -> None:
        """Release connections; called after the tasks have stopped."""

    async def stop(self) -> None:
        self.stop_event.set()
        await finish_or_cancel(self._tasks.values(), self.stop_timeout_s)
        self._tasks.clear()
        await self.close()

    async def wait(self) -> None:
        """Wait until stopped (by `stop()`, a signal, or a dead task)."""
        await self.stop_event.wait()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

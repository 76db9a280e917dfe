"""Active/standby: the loop that makes one of several processes of a role the one that acts.

A process stands by until its `Authority` (the dispatcher's KV lease, services/core/leases.py;
the projector's Postgres session lock, services/projector/holder.py) is granted, then starts a
`Term`: `elected(term)` binds what only the active may use and spawns the term's tasks, which
run until `term.ended` is set. While the term lasts the authority is renewed every `renew_s`;
when a renewal fails for sure, or cannot be made before the authority's validity runs out, the
term ends at once (its tasks stop, `deposed()` drops the in-memory state) and the process stands
by again. On a clean stop the term ends and the authority is released, so a standby takes over
without waiting for it to expire.

`fence()` raises `Deposed` once the authority is no longer valid: the active calls it before
every decision it stores, so nothing is decided after its lease ran out by its own clock.

A task of the term that dies makes the whole loop raise (the service stops, as when any of its
tasks dies); a failure of `elected` ends that term, releases the authority and stands by again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

import nats.errors

from services.core import errors, leases, lifecycle, logging

log = logging.get("leadership")

#: how long a term's tasks get to finish their batch when it ends
TERM_STOP_S = 10.0
#: a failed election's pause before the next try
RETRY_AFTER_FAILED_ELECTION_S = 1.0
#: errors that mean "the outcome is not known", never "lost"
TRANSIENT = (nats.errors.Error, OSError, TimeoutError, errors.TransientError)


class Deposed(errors.HeadraceError):
    """This process no longer holds its role: it must not decide anything."""


class Authority(Protocol):
    """What grants the role: tried by standbys, renewed by the active, released on a clean stop."""

    def valid(self) -> bool: ...

    def remaining_s(self) -> float: ...

    async def try_acquire(self) -> bool: ...

    async def renew(self) -> bool: ...

    async def release(self) -> None: ...

    def forget(self) -> None: ...


class Term:
    """One stretch of leadership: the tasks it runs and the event that ends them."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ended = asyncio.Event()
        self.tasks: list[asyncio.Task[Any]] = []
        #: set when one of its tasks died with an exception
        self.broken = asyncio.Event()
        self.failure: BaseException | None = None

    def spawn(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=f"{self.name}:{name}")
        task.add_done_callback(self._done)
        self.tasks.append(task)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or self.ended.is_set():
            return
        exc = task.exception()
        if exc is not None and not isinstance(exc, Deposed):  # Deposed: it stopped for the term's end
            log.error("term_task_died", term=self.name, task=task.get_name(), error=repr(exc))
            self.failure = exc
            self.broken.set()

    async def close(self, timeout_s: float = TERM_STOP_S) -> None:
        self.ended.set()
        await lifecycle.finish_or_cancel(self.tasks, timeout_s)
        for task in self.tasks:  # retrieved, so asyncio logs no "exception was never retrieved"
            if task.done() and not task.cancelled():
                task.exception()
        self.tasks.clear()


Elected = Callable[[Term], Awaitable[None]]
Deposer = Callable[[], Awaitable[None]]


class Leadership:
    def __init__(
        self,
        authority: Authority,
        *,
        role: str,
        source: str,
        elected: Elected,
        deposed: Deposer,
        renew_s: float,
        standby: leases.Standby | None = None,
    ) -> None:
        self.authority = authority
        self.role = role
        self.source = source
        self.elected = elected
        self.deposed = deposed
        self.renew_s = renew_s
        self.poll_s = renew_s / 2
        self.standby = standby
        self.term: Term | None = None
        #: how many terms this process has begun (tests and logs)
        self.terms = 0

    @property
    def active(self) -> bool:
        return self.term is not None and not self.term.ended.is_set()

    def fence(self) -> None:
        """Raise Deposed unless this process is the active one and its authority is still valid."""
        if not self.active or not self.authority.valid():
            raise Deposed(f"{self.source} no longer leads {self.role}: nothing more is decided here")

    async def start(self) -> None:
        """One try at once (so a lone process is active when `start` returns); a failed election raises."""
        if await self._try():
            await self._begin(raise_errors=True)

    async def run(self, stop: asyncio.Event) -> None:
        """Stand by and lead in turn until `stop`; then step down and release."""
        try:
            while not stop.is_set():
                if self.term is None:
                    await self._stand_by(stop)
                else:
                    await self._hold(stop)
        finally:
            await self._step_down(release=True, why="stopping")
            if self.standby is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.standby.clear(), timeout=2.0)

    async def _try(self) -> bool:
        try:
            return await asyncio.wait_for(self.authority.try_acquire(), timeout=max(self.renew_s, 1.0))
        except TRANSIENT as exc:
            log.warning("election_try_failed", role=self.role, error=str(exc) or type(exc).__name__)
            return False

    async def _stand_by(self, stop: asyncio.Event) -> None:
        if await self._try():
            await self._begin(raise_errors=False)
            return
        if self.standby is not None:
            try:
                await self.standby.beat()
            except TRANSIENT as exc:
                log.warning("standby_beat_failed", role=self.role, error=str(exc) or type(exc).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=self.poll_s)

    async def _begin(self, *, raise_errors: bool) -> None:
        self.terms += 1
        term = Term(f"{self.role}-term-{self.terms}")
        self.term = term
        try:
            if self.standby is not None:
                with contextlib.suppress(*TRANSIENT):
                    await self.standby.clear()
            await self.elected(term)
        except Exception as exc:
            await self._step_down(release=True, why=f"election failed: {str(exc) or type(exc).__name__}")
            if raise_errors:
                raise
            log.exception("election_failed", role=self.role)
            await asyncio.sleep(RETRY_AFTER_FAILED_ELECTION_S)
            return
        log.info("leadership_taken", role=self.role, source=self.source, term=self.terms)

    async def _hold(self, stop: asyncio.Event) -> None:
        """Renew until stopped or lost; a dead task of the term raises its error."""
        term = self.term
        assert term is not None
        wait_s = self.renew_s
        while not stop.is_set():
            waiting = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(term.broken.wait())]
            try:
                # FIRST_COMPLETED: a stop or a dead task is acted on at once, not at the next renewal
                await asyncio.wait(
                    waiting, timeout=min(wait_s, self.authority.remaining_s()), return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for future in waiting:
                    future.cancel()
            if stop.is_set():
                return
            if term.failure is not None:
                failure = term.failure
                await self._step_down(release=True, why=f"a task died: {failure!r}")
                raise failure
            try:
                renewed = await asyncio.wait_for(
                    self.authority.renew(), timeout=max(0.05, self.authority.remaining_s())
                )
            except TRANSIENT as exc:
                log.warning("lease_renewal_failed", role=self.role, error=str(exc) or type(exc).__name__)
                renewed = None
            if renewed is False or not self.authority.valid():
                why = "lost to another holder" if renewed is False else "not renewed before it ran out"
                await self._step_down(release=False, why=why)
                return
            wait_s = self.renew_s if renewed else self.renew_s / 4

    async def _step_down(self, *, release: bool, why: str) -> None:
        term, self.term = self.term, None
        if term is None:
            return
        was_valid = self.authority.valid()
        if not release:
            self.authority.forget()  # fence at once: nothing the ending term still tries is stored
        await term.close()
        try:
            await self.deposed()
        finally:
            if release:
                try:
                    await asyncio.wait_for(self.authority.release(), timeout=2.0)
                except Exception as exc:  # it runs out by itself
                    log.warning("lease_release_failed", role=self.role, error=str(exc) or type(exc).__name__)
            else:
                self.authority.forget()
        level = log.info if release else log.warning
        level("leadership_ended", role=self.role, source=self.source, why=why, released=release, valid=was_valid)

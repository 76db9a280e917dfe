"""The runner's built-in job kinds: agent runs (`work.agent.<name>`) and prompts (`work.prompt.<mode>`).

`Runner._execute` hands a work item of a reserved kind to `Runtime.execute(item, cancel)` and gets
a `protocol.Outcome` back, exactly like a plugin's: the runner publishes started/outcome events,
keeps the lease with in-progress acks meanwhile, and the dispatcher decides retries and dead
letters. Here: the deadline and cancellation of the whole run, child jobs (submitted as
`job.submit` commands with deterministic ids, waited for on their events) and cancelling the
children still open when the run stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from typing import Any

from services.core import agents as agents_mod
from services.core import bus as bus_mod
from services.core import catalog as catalog_mod
from services.core import config as config_mod
from services.core import envelope, errors, job_waits, logging, offload, subjects
from services.runner import attempt, protocol, traces

log = logging.get("runner.builtin")


@dataclasses.dataclass(slots=True, kw_only=True)
class Run:
    """One attempt of one agent run or prompt, with what it needs to reach the rest of the system."""

    bus: bus_mod.Bus
    config: config_mod.Config
    catalog: catalog_mod.Catalog
    source: str
    item: attempt.WorkItem
    tracer: traces.Tracer
    started: float = dataclasses.field(default_factory=time.monotonic)
    #: child jobs submitted and not yet final (cancelled when the run stops early)
    open_children: set[str] = dataclasses.field(default_factory=set)

    @property
    def elapsed_ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)

    async def run_child(
        self,
        *,
        child_id: str,
        command_id: str,
        plugin: str,
        command: str,
        payload: dict[str, Any],
        submitted_by: str,
        context: dict[str, Any] | None = None,
    ) -> envelope.Envelope:
        """Submit a child job (once: the ids are deterministic) and wait for its final event."""
        item = self.item
        data: dict[str, Any] = {
            "plugin": plugin,
            "command": command,
            "payload": payload,
            "submitted_by": submitted_by,
            "parent_job_id": item.job_id,
        }
        if context:
            data["context"] = context
        if item.authority is not None:  # the child runs on the same caller's behalf (the dispatcher checks it)
            data["authority"] = item.authority
        cmd = envelope.make(
            "job.submit",
            source=self.source,
            job_id=child_id,
            id=command_id,
            causation_id=item.job_id,
            correlation_id=item.correlation_id,
            data=data,
        )

        async def submit() -> None:
            # a retried attempt re-attaches to a child submitted before (JetStream's duplicate window is
            # only minutes long, the COMMANDS stream keeps submits for days)
            subject = subjects.job_command(child_id, "submit")
            if await self.bus.last_message(subjects.COMMANDS, subject) is None:
                await self.bus.publish(subject, cmd)

        self.open_children.add(child_id)
        final = await job_waits.wait_final(self.bus, child_id, timeout_s=None, before=submit)
        self.open_children.discard(child_id)
        assert final is not None  # no timeout: the run's own deadline bounds the wait
        return final

    async def child_result(self, final: envelope.Envelope) -> Any:
        """The `result` a succeeded child's plugin answered (resolved when offloaded)."""
        response = await offload.resolve(self.bus, final.data.get("result"))
        return response.get("result") if isinstance(response, dict) else response

    async def cancel_children(self, reason: str) -> None:
        for child_id in sorted(self.open_children):
            cmd = envelope.make(
                "job.cancel",
                source=self.source,
                job_id=child_id,
                id=f"{child_id}:cancel",
                correlation_id=self.item.correlation_id,
                data={"reason": reason},
            )
            with contextlib.suppress(errors.TransientError):
                await self.bus.publish(subjects.job_command(child_id, "cancel"), cmd)
        self.open_children.clear()


def child_error(final: envelope.Envelope) -> str:
    """What went wrong with a child job that did not succeed."""
    data = final.data
    status = final.type.removeprefix("job.")
    return f"{status}: {data.get('error') or data.get('reason') or 'no detail'}"


class Runtime:
    """Runs the reserved job kinds for one runner."""

    def __init__(
        self, *, bus: bus_mod.Bus, config: config_mod.Config, catalog: catalog_mod.Catalog, source: str
    ) -> None:
        self.bus = bus
        self.config = config
        self.catalog = catalog
        self.source = source
        self.agents = agents_mod.specs(config)

    def agent_names(self) -> list[str]:
        return sorted(self.agents)

    def problems(self) -> dict[str, list[str]]:
        """Per agent, the tools that cannot run (logged at start; such agents' jobs are rejected)."""
        out = {name: agents_mod.problems(spec, self.catalog, self.config) for name, spec in self.agents.items()}
        return {name: found for name, found in out.items() if found}

    async def execute(self, item: attempt.WorkItem, cancel: asyncio.Event) -> protocol.Outcome:
        """One attempt, bounded by the work item's deadline and stopped by a cancel signal."""
        from services.runner import agents, prompts  # the loops import this module

        if item.plugin == agents_mod.AGENT:
            spec = self.agents.get(item.command)
            if spec is None:
                return protocol.Outcome(
                    status="failed", retry=False, error=f"agent {item.command!r} is not configured on this runner"
                )
            tracer = traces.Tracer(self.bus, item, agent_name=spec.name, source=self.source)
            run = Run(
                bus=self.bus, config=self.config, catalog=self.catalog, source=self.source, item=item, tracer=tracer
            )
            work = asyncio.ensure_future(agents.run_agent(run, spec))
        else:
            name = str(item.payload.get("prompt_name") or (item.payload.get("agents") or ["prompt"])[0])
            tracer = traces.Tracer(self.bus, item, agent_name=name, source=self.source)
            run = Run(
                bus=self.bus, config=self.config, catalog=self.catalog, source=self.source, item=item, tracer=tracer
            )
            work = asyncio.ensure_future(prompts.run_prompt(run))
        stopper = asyncio.ensure_future(cancel.wait())
        done, _ = await asyncio.wait({work, stopper}, timeout=item.timeout_s, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if work in done:
            try:
                return work.result()
            except errors.TransientError as exc:
                await run.cancel_children(f"its parent {item.job_id} failed: {exc.message}")
                await self._trace_quietly(
                    run, "task_error", {"error": exc.message, "retryable": True, "ended_at": traces.now()}
                )
                return protocol.Outcome(status="failed", error=exc.message, retry=True, duration_ms=run.elapsed_ms)
        work.cancel()
        with contextlib.suppress(BaseException):
            await work
        if cancel.is_set():
            await run.cancel_children(f"its parent {item.job_id} was cancelled")
            await self._trace_quietly(
                run, "task_cancelled", {"reason": "cancelled while running", "ended_at": traces.now()}
            )
            return protocol.Outcome(
                status="cancelled", error="cancelled while running", retry=False, duration_ms=run.elapsed_ms
            )
        error = f"{item.plugin} {item.command!r} exceeded its deadline of {item.timeout_s:g}s"
        await run.cancel_children(f"its parent {item.job_id} timed out")
        await self._trace_quietly(run, "task_error", {"error": error, "ended_at": traces.now()})
        return protocol.Outcome(status="timed_out", error=error, duration_ms=run.elapsed_ms)

    @staticmethod
    async def _trace_quietly(run: Run, kind: str, payload: dict[str, Any]) -> None:
        try:
            await run.tracer.emit(kind, payload)
        except errors.TransientError as exc:
            log.warning("trace_lost", job_id=run.item.job_id, kind=kind, error=exc.message)

"""Pipeline routing decisions: which child jobs an event causes, and what a pipeline's
root job becomes. Pure functions over the compiled pipelines; `trees.py` keeps the count of
open jobs per root, `service.py` does the I/O.

    start:   an event (API trigger, plugin event, ingest, hook) → root job + entry child jobs
    advance: a child job finished → child jobs of the next steps (one per emitted event)
"""

from __future__ import annotations

import copy
import dataclasses
import uuid
from typing import Any

from services.core import emitted, envelope, paths, subjects, templates
from services.core import pipelines as pipelines_mod

NAMESPACE = uuid.UUID("8d6f3f0a-55a5-4c8e-9d3e-2b9c8e7f6a10")
STEP_SUCCEEDED = "ductile.step.succeeded"
#: what an emitted event hands on in the next step's request `event` besides type and payload
EVENT_STAMP = ("dedupe_key", *emitted.STAMP)


def derived_id(*parts: object) -> str:
    """A deterministic job id: a redelivered input derives the same children."""
    return str(uuid.uuid5(NAMESPACE, ":".join(map(str, parts))))


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """Where a child job sits: carried in its submit as `route` and read back from its queued event."""

    pipeline: str
    root: str
    depth: int
    hooked: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"pipeline": self.pipeline, "root": self.root, "depth": self.depth, "hooked": self.hooked}

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> Route | None:
        if not raw or "root" not in raw:
            return None
        return cls(
            pipeline=raw["pipeline"], root=raw["root"], depth=int(raw.get("depth", 0)), hooked=bool(raw.get("hooked"))
        )


@dataclasses.dataclass(slots=True)
class Dispatch:
    """What one routing step decided: submit commands for child jobs, events to record, and failures."""

    submits: list[envelope.Envelope] = dataclasses.field(default_factory=list)
    events: list[tuple[str, envelope.Envelope]] = dataclasses.field(default_factory=list)
    #: (step id, error) of a step that failed before it could run (bad template, missing baggage, depth)
    failures: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    #: each new child: (job_id, parent_job_id, plugin, command, step id)
    children: list[tuple[str, str, str, str, str]] = dataclasses.field(default_factory=list)


def claim_baggage(spec: dict[str, Any], payload: dict[str, Any], inherited: dict[str, Any]) -> dict[str, Any]:
    """The context after a step's `baggage`; raises ValueError on a missing source or a changed inherited path."""
    context = copy.deepcopy(inherited)
    claims: list[tuple[str, Any]] = []
    scope = {"payload": payload}
    if "from" in spec:
        value = paths.lookup(scope, spec["from"])
        if value is paths.MISSING:
            raise ValueError(f"baggage source {spec['from']!r} is missing")
        claims.append((spec["namespace"], value))
    else:
        for target, source in spec.items():
            value = paths.lookup(scope, source)
            if value is paths.MISSING:
                raise ValueError(f"baggage source {source!r} is missing")
            claims.append((target, value))
    for target, value in claims:
        existing = paths.lookup({"c": inherited}, f"c.{target}")
        if existing is not paths.MISSING and existing != value:
            raise ValueError(f"baggage path context.{target} is inherited and immutable")
        paths.assign(context, target, value)
    return context


def dispatch_node(
    pipeline: pipelines_mod.Pipeline,
    node_id: str,
    event: dict[str, Any],
    *,
    parent_job_id: str,
    event_index: int,
    context: dict[str, Any],
    route: Route,
    correlation_id: str,
    source: str,
    plugin_config: dict[str, dict[str, Any]],
    out: Dispatch,
    seen: frozenset[str] = frozenset(),
) -> None:
    """Send `event` ({type, payload, dedupe_key?}) to one node: a child job, a bypass, or a failure."""
    node = pipeline.nodes[node_id]
    if node.kind == "fail":
        out.failures.append((node.id, node.error or "failed"))
        return
    if pipeline.max_depth and route.depth >= pipeline.max_depth:
        out.failures.append((node.id, f"max_depth {pipeline.max_depth} exceeded at step {node.id!r}"))
        return
    payload = event.get("payload") or {}
    scope = {"payload": payload, "context": context, "config": plugin_config.get(node.plugin, {})}
    if node.condition is not None:
        passed = node.condition(scope)
        switch = envelope.make(
            "job.switch",
            source=source,
            job_id=route.root,
            id=f"{route.root}:switch:{parent_job_id}:{event_index}:{node.id}",
            correlation_id=correlation_id,
            data={
                "switch": f"ductile.switch.{'true' if passed else 'false'}",
                "step_id": node.id,
                "pipeline": pipeline.name,
                "parent_job_id": parent_job_id,
            },
        )
        out.events.append((subjects.job_event(route.root, "switch"), switch))
        if not passed:
            for successor in node.successors:  # bypass: the same event flows on downstream
                if successor not in seen:
                    dispatch_node(
                        pipeline,
                        successor,
                        event,
                        parent_job_id=parent_job_id,
                        event_index=event_index,
                        context=context,
                        route=route,
                        correlation_id=correlation_id,
                        source=source,
                        plugin_config=plugin_config,
                        out=out,
                        seen=seen | {node.id},
                    )
            return
    try:
        child_payload = dict(payload)
        for key, template in (node.with_ or {}).items():
            child_payload[key] = templates.render(template, scope)
        child_context = claim_baggage(dict(node.baggage), payload, context) if node.baggage else context
    except (templates.TemplateError, ValueError) as exc:
        out.failures.append((node.id, str(exc)))
        return
    job_id = derived_id(parent_job_id, event_index, pipeline.name, node.id)
    data: dict[str, Any] = {
        "plugin": node.plugin,
        "command": node.command,
        "payload": child_payload,
        "submitted_by": "route",
        "context": child_context,
        "parent_job_id": parent_job_id,
        "pipeline": pipeline.name,
        "step_id": node.id,
        "route": dataclasses.replace(route, depth=route.depth + 1).to_dict(),
    }
    if node.command == "handle":
        data["event"] = {
            "type": event.get("type") or STEP_SUCCEEDED,
            "payload": child_payload,
            **{key: event[key] for key in EVENT_STAMP if event.get(key)},
        }
    if event.get("dedupe_key"):
        data["dedupe_key"] = event["dedupe_key"]
    out.submits.append(
        envelope.make(
            "job.submit", source=source, job_id=job_id, id=f"{job_id}:submit", correlation_id=correlation_id, data=data
        )
    )
    out.children.append((job_id, parent_job_id, node.plugin, node.command, node.id))


def root_events(
    root_id: str,
    pipeline: pipelines_mod.Pipeline,
    *,
    payload: dict[str, Any],
    submitted_by: str,
    parent_job_id: str | None,
    correlation_id: str,
    route: Route,
    trigger: str,
    source: str,
) -> list[tuple[str, envelope.Envelope]]:
    """queued + started of a pipeline's root job (plugin "pipeline", command = its name)."""
    common = {"plugin": "pipeline", "command": pipeline.name}
    queued = envelope.make(
        "job.queued",
        source=source,
        job_id=root_id,
        id=f"{root_id}:queued",
        correlation_id=correlation_id,
        data={
            **common,
            "payload": payload,
            "submitted_by": submitted_by,
            "attempt": 1,
            "parent_job_id": parent_job_id,
            "pipeline": pipeline.name,
            "route": route.to_dict(),
            "trigger": trigger,
            "pipeline_root": True,
        },
    )
    started = envelope.make(
        "job.started",
        source=source,
        job_id=root_id,
        id=f"{root_id}:1:started",
        correlation_id=correlation_id,
        data={**common, "attempt": 1, "runner": "dispatcher"},
    )
    return [(subjects.job_event(root_id, "queued"), queued), (subjects.job_event(root_id, "started"), started)]


def root_outcome(
    root_id: str,
    pipeline_name: str,
    *,
    failed: dict[str, Any] | None,
    result: Any,
    tree: list[dict[str, Any]],
    correlation_id: str,
    source: str,
) -> tuple[str, envelope.Envelope]:
    """The root's final event: succeeded when the whole tree did, else failed naming the step."""
    common = {"plugin": "pipeline", "command": pipeline_name, "attempt": 1, "pipeline_root": True, "tree": tree}
    if failed:
        env = envelope.make(
            "job.failed",
            source=source,
            job_id=root_id,
            id=f"{root_id}:1:failed",
            correlation_id=correlation_id,
            data={
                **common,
                "retry": False,
                "step_id": failed["step_id"],
                "error": f"step {failed['step_id']!r} failed: {failed['error']}",
            },
        )
        return subjects.job_event(root_id, "failed"), env
    env = envelope.make(
        "job.succeeded",
        source=source,
        job_id=root_id,
        id=f"{root_id}:1:succeeded",
        correlation_id=correlation_id,
        data={**common, "result": result},
    )
    return subjects.job_event(root_id, "succeeded"), env


def plugin_events(result: dict[str, Any] | None, outcome: envelope.Envelope | None = None) -> list[dict[str, Any]]:
    """The events a job's stored result holds, stamped (services/core/emitted.py) from its `outcome` event:
    the emitting plugin, the outcome's time, the id the runner's `plugin.emitted` record has."""
    return [
        stamp(event, outcome, i)
        for i, event in enumerate((result or {}).get("events") or [])
        if isinstance(event, dict) and event.get("type")
    ]


def stamp(event: dict[str, Any], outcome: envelope.Envelope | None, index: int) -> dict[str, Any]:
    """The `index`-th event of the job whose final event is `outcome`, with source/timestamp/event_id."""
    if outcome is None or not outcome.job_id:
        return event
    return emitted.stamped(
        event,
        plugin=str(outcome.data.get("plugin")),
        job_id=outcome.job_id,
        attempt=int(outcome.data.get("attempt") or 1),
        index=index,
        at=outcome.time,
    )


def emitted_events(result: dict[str, Any] | None, outcome: envelope.Envelope | None = None) -> list[dict[str, Any]]:
    """The events a finished step job hands on: what it emitted, else a synthetic step-succeeded."""
    events = plugin_events(result, outcome)
    if events:
        return events
    inner = (result or {}).get("result")
    return [{"type": STEP_SUCCEEDED, "payload": inner if isinstance(inner, dict) else {"result": inner}}]


def with_upstream(
    event: dict[str, Any], *, plugin: Any, pipeline: str, step_id: Any, result: dict[str, Any] | None
) -> dict[str, Any]:
    """The event as the next step sees it: Ductile's dispatcher adds `ductile_upstream_plugin`,
    `ductile_upstream_pipeline`, `ductile_upstream_step_id` and, when the upstream reply had a
    `result` message, `result` to the routed payload (each only when the payload does not set it)."""
    payload = dict(event.get("payload") or {})
    for key, value in (
        ("ductile_upstream_plugin", plugin),
        ("ductile_upstream_pipeline", pipeline),
        ("ductile_upstream_step_id", step_id),
    ):
        if value:
            payload.setdefault(key, value)
    message = (result or {}).get("result")
    if isinstance(message, str) and message.strip():
        payload.setdefault("result", message)
    return {**event, "payload": payload}


def matches(
    pipeline: pipelines_mod.Pipeline,
    *,
    payload: dict[str, Any],
    from_plugin: str | None,
    context: dict[str, Any] | None = None,
) -> bool:
    """Does a pipeline's `from_plugin` and pipeline-level `if` admit this event?"""
    if pipeline.from_plugin and pipeline.from_plugin != from_plugin:
        return False
    if pipeline.condition is not None:
        return pipeline.condition({"payload": payload, "context": context or {}, "config": {}})
    return True

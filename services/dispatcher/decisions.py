"""Pure decisions of the dispatcher: a command (and what the catalog and config say) in,
the events and work items to publish out. No I/O here; `service.py` is the thin shell.

    cmd.job.<id>.submit → evt.job.<id>.queued + work.<plugin>.<command>   (or evt.job.<id>.rejected)
"""

from __future__ import annotations

from typing import Any

from services.core import agents, envelope, scopes, subjects
from services.core import catalog as catalog_mod
from services.core import config as config_mod

Published = list[tuple[str, envelope.Envelope]]


def rejection_reason(data: dict[str, Any], catalog: catalog_mod.Catalog, config: config_mod.Config) -> str | None:
    """Why a submit cannot become a job, or None when it can."""
    plugin, command = data.get("plugin"), data.get("command")
    if not isinstance(plugin, str) or not isinstance(command, str):
        return "plugin and command must be strings"
    if plugin in agents.RESERVED:  # agent runs and prompts: services/core/agents.py
        return agents.rejection_reason(data, catalog, config)
    manifest = catalog.get(plugin)
    if manifest is None:
        return f"unknown plugin {plugin!r}"
    if not config.plugin(plugin).enabled:
        return f"plugin {plugin!r} is disabled"
    if command not in manifest.commands:
        return f"plugin {plugin!r} has no command {command!r}"
    if not isinstance(data.get("payload", {}), dict):
        return "payload must be an object"
    # work done on a caller's behalf (an agent's tool call, a retry, a replay) needs the caller's scope
    return scopes.forbidden_reason(scopes.Authority.from_data(data.get("authority")), catalog, plugin, command)


def work_item(
    job_id: str,
    data: dict[str, Any],
    *,
    attempt: int,
    config: config_mod.Config,
    source: str,
    correlation_id: str | None,
    id_suffix: str = "",
) -> tuple[str, envelope.Envelope]:
    plugin, command = data["plugin"], data["command"]
    env = envelope.make(
        "job.work",
        source=source,
        job_id=job_id,
        id=f"{job_id}:{attempt}:work{id_suffix}",
        causation_id=job_id,
        correlation_id=correlation_id,
        data={
            "plugin": plugin,
            "command": command,
            "payload": data.get("payload") or {},
            "attempt": attempt,
            "timeout_s": config.plugin(plugin).timeout_s(command),
            "submitted_by": data.get("submitted_by", "api"),
            "event": data.get("event"),
            "context": data.get("context"),
            "route": data.get("route"),
            "step_id": data.get("step_id"),
            "authority": data.get("authority"),
        },
    )
    return subjects.work(plugin, command), env


def skipped(cmd: envelope.Envelope, *, reason: str, source: str, **details: Any) -> Published:
    """A job that is recorded but never runs (duplicate, open circuit): `job.skipped` with the reason."""
    job_id = cmd.job_id
    assert job_id is not None
    data = cmd.data
    env = envelope.make(
        "job.skipped",
        source=source,
        job_id=job_id,
        id=f"{job_id}:skipped",
        causation_id=cmd.id,
        correlation_id=cmd.correlation_id or job_id,
        data={
            "reason": reason,
            "plugin": data.get("plugin"),
            "command": data.get("command"),
            "payload": data.get("payload") or {},
            "submitted_by": data.get("submitted_by", "api"),
            "created_at": cmd.time,
            "parent_job_id": data.get("parent_job_id"),
            "route": data.get("route"),
            "pipeline": data.get("pipeline"),
            "step_id": data.get("step_id"),
            **details,
        },
    )
    return [(subjects.job_event(job_id, "skipped"), env)]


def decide_submit(
    cmd: envelope.Envelope, catalog: catalog_mod.Catalog, config: config_mod.Config, *, source: str
) -> Published:
    """Accept (queued + work item) or reject a submit; dedupe and breakers are checked by the caller."""
    job_id = cmd.job_id
    if not job_id:
        return []
    data = cmd.data
    correlation_id = cmd.correlation_id or job_id
    reason = rejection_reason(data, catalog, config)
    if reason is not None:
        env = envelope.make(
            "job.rejected",
            source=source,
            job_id=job_id,
            id=f"{job_id}:rejected",
            causation_id=cmd.id,
            correlation_id=correlation_id,
            data={"reason": reason, "command": data},
        )
        return [(subjects.job_event(job_id, "rejected"), env)]
    out: Published = []
    retry_of = data.get("retry_of")
    if retry_of:
        requeued = envelope.make(
            "job.requeued",
            source=source,
            job_id=retry_of,
            id=f"{retry_of}:requeued:{job_id}",
            causation_id=cmd.id,
            correlation_id=retry_of,
            data={"new_job_id": job_id},
        )
        out.append((subjects.job_event(retry_of, "requeued"), requeued))
    queued_data = {
        "plugin": data["plugin"],
        "command": data["command"],
        "payload": data.get("payload") or {},
        "submitted_by": data.get("submitted_by", "api"),
        "attempt": 1,
        "created_at": cmd.time,
        "event": data.get("event"),
        "context": data.get("context"),
        "parent_job_id": data.get("parent_job_id"),
        "pipeline": data.get("pipeline"),
        "step_id": data.get("step_id"),
        "retry_of": retry_of,
        "dedupe_key": data.get("dedupe_key"),
        "route": data.get("route"),
        "authority": data.get("authority"),
    }
    queued = envelope.make(
        "job.queued",
        source=source,
        job_id=job_id,
        id=f"{job_id}:queued",
        causation_id=cmd.id,
        correlation_id=correlation_id,
        data=queued_data,
    )
    return [
        *out,
        (subjects.job_event(job_id, "queued"), queued),
        work_item(job_id, data, attempt=1, config=config, source=source, correlation_id=correlation_id),
    ]

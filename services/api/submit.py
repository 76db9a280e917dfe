"""Turning an accepted request into a `job.submit` command on cmd.job.<id>.submit.

The command's id is derived from the job id, so a retried publish is dropped by JetStream.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.api import state
from services.core import envelope, scopes, subjects


async def submit_job(
    st: state.ApiState,
    *,
    plugin: str,
    command: str,
    payload: dict[str, Any],
    submitted_by: str = "api",
    event: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
    job_id: str | None = None,
    extra: dict[str, Any] | None = None,
    authority: scopes.Authority | None = None,
) -> str:
    """Publish the submit command and wait for its PubAck; returns the job id."""
    job_id = job_id or envelope.new_id()
    data: dict[str, Any] = {"plugin": plugin, "command": command, "payload": payload, "submitted_by": submitted_by}
    if event is not None:
        data["event"] = event
    if context is not None:
        data["context"] = context
    if extra:
        data.update(extra)
    if authority is not None:  # on whose behalf: checked where its work (an agent's tool calls) is made
        data["authority"] = authority.to_data()
    cmd = envelope.Envelope(
        id=f"{job_id}:submit",
        type="job.submit",
        time=envelope.rfc3339(envelope.now()),
        source=st.source,
        job_id=job_id,
        correlation_id=job_id,
        data=data,
    )
    await st.bus.publish(subjects.job_command(job_id, "submit"), cmd)
    return job_id


async def resubmit(
    st: state.ApiState,
    row: Mapping[str, Any],
    spec: Mapping[str, Any],
    *,
    job_id: str,
    submitted_by: str,
    extra: dict[str, Any],
    authority: scopes.Authority,
) -> str:
    """A new job running `row`'s plugin command again with the input `spec` held (the original's `queued`
    event, else its row): a retry of a dead job, a Laddr replay."""
    return await submit_job(
        st,
        plugin=row["plugin"],
        command=row["command"],
        payload=spec.get("payload") or {},
        event=spec.get("event"),
        context=spec.get("context"),
        submitted_by=submitted_by,
        job_id=job_id,
        extra=extra,
        authority=authority,
    )

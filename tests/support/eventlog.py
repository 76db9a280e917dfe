"""The EVENTS stream read with a raw NATS client (no Headrace code in between) and folded into
one plain history per job, for tests that count outcomes from the source of truth itself.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import nats
import orjson
from nats.js import api

#: event type → the final status it gives an ordinary job
FINAL_TYPES = {
    "job.succeeded": "succeeded",
    "job.dead": "dead",
    "job.skipped": "skipped",
    "job.cancelled": "cancelled",
    "job.rejected": "rejected",
}
#: a pipeline's root job also ends with `job.failed` (naming the step)
ROOT_FINAL_TYPES = {**FINAL_TYPES, "job.failed": "failed"}


@dataclasses.dataclass(slots=True)
class Event:
    seq: int
    subject: str
    type: str
    job_id: str | None
    source: str
    data: dict[str, Any]


@dataclasses.dataclass(slots=True)
class JobHistory:
    job_id: str
    plugin: str | None = None
    command: str | None = None
    parent_job_id: str | None = None
    pipeline_root: bool = False
    payload: dict[str, Any] = dataclasses.field(default_factory=dict)
    types: list[str] = dataclasses.field(default_factory=list)
    #: "<seq> <type> a<attempt> <source>" per event, for failure messages
    trail: list[str] = dataclasses.field(default_factory=list)
    #: attempt numbers, in log order
    started: list[int] = dataclasses.field(default_factory=list)
    succeeded: list[int] = dataclasses.field(default_factory=list)
    failed: list[int] = dataclasses.field(default_factory=list)
    lost: list[int] = dataclasses.field(default_factory=list)
    #: an attempt started after the job had already succeeded
    started_after_success: list[int] = dataclasses.field(default_factory=list)
    final: str | None = None
    #: why it was skipped or rejected
    reason: str | None = None
    #: the last failed attempt's (or dead letter's) error
    error: str | None = None

    @property
    def is_root(self) -> bool:
        return self.parent_job_id is None


async def read_all(
    url: str | list[str], *, stream: str = "EVENTS", subject: str = "evt.>", batch: int = 2000, timeout_s: float = 10.0
) -> list[Event]:
    """Every message of `stream` up to its last sequence at the time of the call, oldest first."""
    nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=3)
    try:
        js = nc.jetstream(timeout=timeout_s)
        last = int((await js.stream_info(stream)).state.last_seq)
        out: list[Event] = []
        if last == 0:
            return out
        sub = await js.pull_subscribe(
            subject,
            stream=stream,
            config=api.ConsumerConfig(
                ack_policy=api.AckPolicy.NONE, deliver_policy=api.DeliverPolicy.ALL, inactive_threshold=60.0
            ),
        )
        try:
            seq = 0
            while seq < last:
                for msg in await sub.fetch(batch=batch, timeout=timeout_s):
                    seq = int(msg.metadata.sequence.stream)
                    if seq > last:
                        break
                    out.append(_event(seq, msg.subject, msg.data))
        finally:
            await sub.unsubscribe()
        return out
    finally:
        await nc.close()


def _event(seq: int, subject: str, raw: bytes) -> Event:
    obj = orjson.loads(raw)
    return Event(
        seq=seq,
        subject=subject,
        type=str(obj.get("type")),
        job_id=obj.get("job_id"),
        source=str(obj.get("source")),
        data=obj.get("data") or {},
    )


def fold(events: list[Event]) -> dict[str, JobHistory]:
    """job id → its history, from `evt.job.<id>.*` events."""
    jobs: dict[str, JobHistory] = {}
    for ev in events:
        if not ev.subject.startswith("evt.job.") or not ev.job_id:
            continue
        job = jobs.setdefault(ev.job_id, JobHistory(ev.job_id))
        data = ev.data
        job.types.append(ev.type)
        job.trail.append(f"{ev.seq} {ev.type} a{data.get('attempt', '-')} {ev.source}")
        if ev.type in ("job.queued", "job.skipped"):
            job.plugin, job.command = data.get("plugin"), data.get("command")
            job.parent_job_id = data.get("parent_job_id")
            job.pipeline_root = bool(data.get("pipeline_root"))
            job.payload = data.get("payload") or {}
        attempt = int(data.get("attempt") or 0)
        if ev.type == "job.started":
            job.started.append(attempt)
            if job.succeeded:
                job.started_after_success.append(attempt)
        elif ev.type == "job.succeeded":
            job.succeeded.append(attempt)
        elif ev.type in ("job.failed", "job.timed_out"):
            job.failed.append(attempt)
            if data.get("lost"):
                job.lost.append(attempt)
        if ev.type in ("job.skipped", "job.rejected"):
            job.reason = str(data.get("reason"))
        if ev.type in ("job.failed", "job.timed_out", "job.dead") and data.get("error"):
            job.error = str(data["error"])
        finals = ROOT_FINAL_TYPES if job.pipeline_root else FINAL_TYPES
        if ev.type in finals:
            job.final = finals[ev.type]
    return jobs


async def job_progress(
    url: str | list[str], *, roots: set[str] | frozenset[str] = frozenset()
) -> tuple[set[str], set[str]]:
    """(every job id in the log, those with a final event), cheaply: subject counts, no message
    bodies. `roots` are pipeline root jobs, for which `job.failed` is final too."""
    nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=3)
    try:
        info = await nc.jetstream(timeout=10).stream_info("EVENTS", subjects_filter="evt.job.*.*")
    finally:
        await nc.close()
    seen: set[str] = set()
    done: set[str] = set()
    for subject in info.state.subjects or {}:
        _, _, job_id, short = subject.split(".", 3)
        seen.add(job_id)
        kind = f"job.{short}"
        if kind in FINAL_TYPES or (kind == "job.failed" and job_id in roots):
            done.add(job_id)
    return seen, done

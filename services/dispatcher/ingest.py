"""Events from outside: the dispatcher's consumer of the INGEST stream.

    ingest.<type>  {"type", "payload", "dedupe_key"?}  → evt.ingest.accepted, then every pipeline
                                                        whose `on` is <type> starts (route_event)
    ingest.<type>  not JSON / beyond the value limits
                   (services/core/values.py) / schema
                   violation / body type ≠ subject type → evt.ingest.rejected (reason, raw body truncated)

Nothing is lost: every message ends as exactly one of those two events before it is acked
(publish, then ack). Ids derive from the message's INGEST stream sequence (`ingest:<seq>`),
so a redelivered message publishes the same events and the same pipeline roots
(`routing.derived_id(cause_id(seq), pipeline)`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from services.core import bus as bus_mod
from services.core import consumers, envelope, logging, schemas, subjects, values
from services.dispatcher import pipeline_runs, publishing

log = logging.get("ingest")

SCHEMA = "ingest-event"
#: characters of a rejected body kept in its event
RAW_LIMIT = 4096
MAX_VIOLATIONS = 5

Published = list[tuple[str, envelope.Envelope]]


def cause_id(stream_seq: int) -> str:
    """The cause of everything one ingested message starts: `ingest:<INGEST stream seq>`."""
    return f"ingest:{stream_seq}"


def validate(subject: str, raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """(the event, None) when `raw` is a valid ingest event for `subject`, else (None, the reason)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return None, f"not JSON: {exc}"
    problem = values.problem_in_json(raw, body)
    if problem is not None:
        return None, f"not accepted: {problem}"
    problems = schemas.violations(SCHEMA, body)
    if problems:
        return None, "schema violation: " + "; ".join(problems[:MAX_VIOLATIONS])
    claimed = subjects.ingest_type(subject)
    if body["type"] != claimed:
        return None, f"type {body['type']!r} does not match the subject's type {claimed!r} ({subject})"
    return body, None


def rejected(subject: str, raw: bytes, seq: int, reason: str, *, source: str) -> tuple[str, envelope.Envelope]:
    text = raw.decode("utf-8", "replace")
    data = {
        "reason": reason,
        "subject": subject,
        "ingest_seq": seq,
        "claimed_type": subjects.ingest_type(subject),
        "raw": text[:RAW_LIMIT],
        "raw_bytes": len(raw),
        "truncated": len(text) > RAW_LIMIT,
    }
    env = envelope.make("ingest.rejected", source=source, id=f"{cause_id(seq)}:rejected", data=data)
    return subjects.ingest_event("rejected"), env


def accepted(
    subject: str, event: dict[str, Any], seq: int, roots: list[str], *, source: str
) -> tuple[str, envelope.Envelope]:
    data = {
        "type": event["type"],
        "payload": event["payload"],
        "dedupe_key": event.get("dedupe_key"),
        "subject": subject,
        "ingest_seq": seq,
        "pipeline_roots": roots,
    }
    env = envelope.make("ingest.accepted", source=source, id=f"{cause_id(seq)}:accepted", data=data)
    return subjects.ingest_event("accepted"), env


class IngestConsumer:
    """Validates, records and routes what outside systems publish on `ingest.>`."""

    def __init__(
        self,
        bus: bus_mod.Bus,
        runs: Callable[[], pipeline_runs.PipelineRuns | None],
        *,
        source: str,
        fence: publishing.Fence = publishing.unfenced,
    ) -> None:
        self.bus = bus
        self.runs = runs
        self.source = source
        self.fence = fence

    async def subscribe(self) -> JetStreamContext.PullSubscription:
        """The durable pull consumer (from the start of INGEST: what came before us is not lost)."""
        return await consumers.ensure_pull(
            self.bus,
            stream=subjects.INGEST,
            durable=subjects.DISPATCHER_INGEST,
            filter_subjects=[subjects.ALL_INGEST],
            ack_wait_s=30,
            max_ack_pending=10_000,
        )

    async def decide(self, subject: str, raw: bytes, seq: int) -> Published:
        """Everything one ingested message publishes."""
        event, reason = validate(subject, raw)
        if event is None:
            log.warning("ingest_rejected", subject=subject, seq=seq, reason=reason)
            return [rejected(subject, raw, seq, reason or "invalid", source=self.source)]
        runs = self.runs()
        routed: Published = []
        if runs is not None:
            routed = await runs.route_event(
                {k: event[k] for k in ("type", "payload", "dedupe_key") if k in event},
                cause_id=cause_id(seq),
                from_plugin=None,
                parent_job_id=None,
                correlation_id=None,
                depth=0,
                submitted_by="ingest",
            )
        roots = [
            env.job_id for _, env in routed if env.type == "job.queued" and env.data.get("pipeline_root") and env.job_id
        ]
        return [accepted(subject, event, seq, roots, source=self.source), *routed]

    async def on_batch(self, msgs: list[Msg]) -> None:
        # each message starts runs of its own (their ids derive from its INGEST sequence): decided concurrently,
        # since each start writes its run's tree (a KV round trip), then published at once and acked
        decided = await asyncio.gather(
            *(self.decide(msg.subject, msg.data or b"", int(msg.metadata.sequence.stream)) for msg in msgs)
        )
        out = [item for published in decided for item in published]
        if out:
            await publishing.publish_decisions(self.bus, out, fence=self.fence)
        for msg in msgs:
            await msg.ack()

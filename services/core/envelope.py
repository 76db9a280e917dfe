"""The event envelope: the one shape of every command, event and work item on NATS.

`encode`/`decode` are the only orjson pair for the wire; `Envelope.id` doubles as
the `Nats-Msg-Id` header so a re-publish after a crash is dropped by JetStream.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import orjson
import uuid_utils

JSONDict = dict[str, Any]


def new_id() -> str:
    """A time-ordered uuid7 string."""
    return str(uuid_utils.uuid7())


def now() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    """RFC 3339 with microseconds and a Z suffix."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    """Parse RFC 3339 (with Z or an offset); naive input is taken as UTC."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    #: uuid7, or a deterministic id (`<job_id>:<attempt>:succeeded`) where a redelivery could publish twice
    id: str
    #: dotted type, e.g. "job.succeeded", "job.submit", "plugin.emitted"
    type: str
    #: RFC 3339 time the producer created it
    time: str
    #: producing actor, e.g. "api/host-1234", "runner/host-99"
    source: str
    job_id: str | None = None
    causation_id: str | None = None
    #: the root job id of a tree of jobs
    correlation_id: str | None = None
    data: JSONDict = dataclasses.field(default_factory=dict)

    def to_dict(self) -> JSONDict:
        out: JSONDict = {"id": self.id, "type": self.type, "time": self.time, "source": self.source}
        if self.job_id is not None:
            out["job_id"] = self.job_id
        if self.causation_id is not None:
            out["causation_id"] = self.causation_id
        if self.correlation_id is not None:
            out["correlation_id"] = self.correlation_id
        out["data"] = self.data
        return out


def make(
    type: str,
    *,
    source: str,
    data: JSONDict | None = None,
    job_id: str | None = None,
    id: str | None = None,
    causation_id: str | None = None,
    correlation_id: str | None = None,
    time: datetime | None = None,
) -> Envelope:
    """Build an envelope, filling id and time when the caller does not fix them."""
    return Envelope(
        id=id or new_id(),
        type=type,
        time=rfc3339(time or now()),
        source=source,
        job_id=job_id,
        causation_id=causation_id,
        correlation_id=correlation_id,
        data=data if data is not None else {},
    )


def encode(envelope: Envelope) -> bytes:
    return orjson.dumps(envelope.to_dict())


class DecodeError(ValueError):
    """The bytes are not a valid envelope."""


def decode(raw: bytes) -> Envelope:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise DecodeError("envelope must be a JSON object")
    try:
        data = obj.get("data", {})
        if not isinstance(data, dict):
            raise DecodeError("envelope data must be an object")
        return Envelope(
            id=str(obj["id"]),
            type=str(obj["type"]),
            time=str(obj["time"]),
            source=str(obj.get("source", "unknown")),
            job_id=obj.get("job_id"),
            causation_id=obj.get("causation_id"),
            correlation_id=obj.get("correlation_id"),
            data=data,
        )
    except KeyError as exc:
        raise DecodeError(f"envelope missing field {exc.args[0]!r}") from exc

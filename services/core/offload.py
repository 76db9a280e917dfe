"""Offload of large results to the JetStream Object Store, so no event exceeds NATS's max payload.

The runner calls `maybe_offload` on a result before it goes into `job.succeeded` / `job.failed`:
a result whose JSON is larger than `offload.threshold_bytes` is stored under
`responses/<job_id>` in `offload.bucket` and the event carries the pointer instead:

    {"offloaded": true, "pointer": {"bucket": "laddr", "key": "responses/<job_id>", "size_bytes": 524288}}

Readers (the agent loop for tool results, the prompt chain, `/api/...`) call `resolve`.
"""

from __future__ import annotations

from typing import Any, TypeGuard

import orjson

from services.core import bus as bus_mod
from services.core import errors

KEY_PREFIX = "responses/"


class OffloadMissing(errors.HeadraceError):
    """The offloaded object the pointer names is gone from the object store."""


def key_for(job_id: str, *, attempt: int | None = None) -> str:
    """`responses/<job_id>` for a job's result; a failed attempt's result gets its own key."""
    return f"{KEY_PREFIX}{job_id}" if attempt is None else f"{KEY_PREFIX}{job_id}/attempt-{attempt}"


def is_pointer(value: Any) -> TypeGuard[dict[str, Any]]:
    return isinstance(value, dict) and value.get("offloaded") is True and isinstance(value.get("pointer"), dict)


def pointer_value(bucket: str, key: str, size_bytes: int) -> dict[str, Any]:
    return {"offloaded": True, "pointer": {"bucket": bucket, "key": key, "size_bytes": size_bytes}}


async def maybe_offload(bus: bus_mod.Bus, value: Any, *, threshold_bytes: int, bucket: str, key: str) -> Any:
    """`value` itself when its JSON fits under the threshold, else the pointer to its stored copy."""
    if value is None:
        return None
    raw = orjson.dumps(value)
    if len(raw) <= threshold_bytes:
        return value
    size = await bus.put_object(bucket, key, raw)
    return pointer_value(bucket, key, size or len(raw))


async def resolve(bus: bus_mod.Bus, value: Any) -> Any:
    """The data behind a pointer (any other value as it is); OffloadMissing when the object is gone."""
    if not is_pointer(value):
        return value
    pointer = value["pointer"]
    raw = await bus.get_object(str(pointer.get("bucket")), str(pointer.get("key")))
    if raw is None:
        raise OffloadMissing(
            f"offloaded response {pointer.get('bucket')}/{pointer.get('key')} is missing from the object store"
        )
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise OffloadMissing(f"offloaded response {pointer.get('bucket')}/{pointer.get('key')} is not JSON") from exc

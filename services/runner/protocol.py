"""Ductile protocol 2: build the request a plugin reads, and turn what it answered (or did)
into an `Outcome` — succeeded, failed or timed_out, with an error a person can act on.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any, Literal

import orjson

from services.core import envelope, schemas
from services.runner import supervision

PERMANENT_FAILURE_EXIT = 78

JSONDict = dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    status: Literal["succeeded", "failed", "timed_out", "cancelled"]
    #: the validated protocol response (None when there was none)
    response: JSONDict | None = None
    error: str | None = None
    #: False when the plugin said so (`"retry": false`) or exited 78
    retry: bool = True
    exit_code: int | None = None
    stderr: str = ""
    duration_ms: int = 0


def build_request(
    *,
    job_id: str,
    command: str,
    config: JSONDict,
    secrets: JSONDict,
    state: JSONDict,
    payload: JSONDict,
    context: JSONDict | None,
    event: JSONDict | None,
    timeout_s: float,
) -> JSONDict:
    request: JSONDict = {
        "protocol": 2,
        "job_id": job_id,
        "command": command,
        "config": config,
        "secrets": secrets,
        "state": state,
        "payload": payload,
        "context": context or {},
        "deadline_at": envelope.rfc3339(envelope.now() + timedelta(seconds=timeout_s)),
    }
    if event is not None:
        request["event"] = event
    return request


def interpret_response(response: Any, *, exit_code: int | None, stderr: str, duration_ms: int) -> Outcome:
    """Validate a decoded response document and classify it."""
    problems = schemas.violations("protocol-response", response)
    if problems:
        return Outcome(
            status="failed",
            error="plugin response is invalid: " + "; ".join(problems),
            exit_code=exit_code, stderr=stderr, duration_ms=duration_ms,
        )
    permanent = exit_code == PERMANENT_FAILURE_EXIT or response.get("retry") is False
    if response["status"] == "ok":
        return Outcome(status="succeeded", response=response, exit_code=exit_code, stderr=stderr,
                       duration_ms=duration_ms)
    return Outcome(
        status="failed", response=response, error=response["error"], retry=not permanent,
        exit_code=exit_code, stderr=stderr, duration_ms=duration_ms,
    )


def interpret_run(raw: supervision.RawRun, *, timeout_s: float) -> Outcome:
    """Classify a finished subprocess."""
    common = {"exit_code": raw.exit_code, "stderr": raw.stderr, "duration_ms": raw.duration_ms}
    if raw.spawn_error:
        return Outcome(status="failed", error=raw.spawn_error, **common)
    if raw.cancelled:
        return Outcome(status="cancelled", error="cancelled while running", retry=False, **common)
    if raw.timed_out:
        return Outcome(status="timed_out", error=f"plugin exceeded its deadline of {timeout_s:g}s and was killed",
                       **common)
    if raw.exit_code == PERMANENT_FAILURE_EXIT:
        detail = _stderr_hint(raw.stderr)
        try:
            response = orjson.loads(raw.stdout) if raw.stdout.strip() else None
        except orjson.JSONDecodeError:
            response = None
        error = response.get("error") if isinstance(response, dict) and response.get("error") else None
        return Outcome(status="failed", error=error or f"plugin exited 78 (permanent failure){detail}",
                       retry=False, response=response if isinstance(response, dict) else None, **common)
    if raw.stdout_truncated:
        return Outcome(status="failed", error=f"plugin stdout exceeded {supervision.STDOUT_CAP_BYTES} bytes", **common)
    if raw.exit_code is not None and raw.exit_code < 0:
        return Outcome(status="failed", error=f"plugin was killed by signal {-raw.exit_code}{_stderr_hint(raw.stderr)}",
                       **common)
    if not raw.stdout.strip():
        return Outcome(status="failed",
                       error=f"plugin exited {raw.exit_code} with empty stdout{_stderr_hint(raw.stderr)}", **common)
    try:
        response = orjson.loads(raw.stdout)
    except orjson.JSONDecodeError:
        preview = raw.stdout[:120].decode("utf-8", "replace")
        return Outcome(status="failed",
                       error=f"plugin exited {raw.exit_code} and stdout is not JSON: {preview!r}{_stderr_hint(raw.stderr)}",
                       **common)
    outcome = interpret_response(response, **common)
    if outcome.status == "succeeded" and raw.exit_code not in (0, None):
        return dataclasses.replace(outcome, status="failed", error=f"plugin answered ok but exited {raw.exit_code}")
    return outcome


def _stderr_hint(stderr: str) -> str:
    tail = stderr.strip().splitlines()[-1:] if stderr.strip() else []
    return f"; stderr: {tail[0][:200]}" if tail else ""

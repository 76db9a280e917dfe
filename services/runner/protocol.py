"""Ductile protocol 2: build the request a plugin reads, and turn what it answered (or did)
into an `Outcome` — succeeded, failed or timed_out, with an error a person can act on.

`checked(outcome)` is the last step for every kind of plugin (subprocess, in-process, agents and
prompts): an answer beyond the value limits (services/core/values.py) or one the wire cannot
encode fails the attempt with the reason, so nothing it carries can stop the runner.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any, Literal, TypedDict

import orjson

from services.core import envelope, schemas, values
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
    problems = [] if plainly_valid(response) else schemas.violations("protocol-response", response)
    if problems:
        return Outcome(
            status="failed",
            error="plugin response is invalid: " + "; ".join(problems),
            exit_code=exit_code,
            stderr=stderr,
            duration_ms=duration_ms,
        )
    problem = codec_problem(response)
    if problem is not None:
        return Outcome(
            status="failed",
            error=f"plugin response is invalid: {problem}",
            exit_code=exit_code,
            stderr=stderr,
            duration_ms=duration_ms,
        )
    permanent = exit_code == PERMANENT_FAILURE_EXIT or response.get("retry") is False
    if response["status"] == "ok":
        return Outcome(
            status="succeeded", response=response, exit_code=exit_code, stderr=stderr, duration_ms=duration_ms
        )
    return Outcome(
        status="failed",
        response=response,
        error=response["error"],
        retry=not permanent,
        exit_code=exit_code,
        stderr=stderr,
        duration_ms=duration_ms,
    )


def _objects_with(items: Any, required: str, strings: tuple[str, ...]) -> bool:
    """A list of objects, each holding `required`, whose `strings` keys (where present) are strings."""
    return isinstance(items, list) and all(
        isinstance(item, dict) and required in item and all(isinstance(item[k], str) for k in strings if k in item)
        for item in items
    )


def plainly_valid(response: Any) -> bool:
    """True only when `response` certainly matches schemas/protocol-response.json: the usual answer is checked
    here in a few microseconds; anything else (False) goes to the schema validator, which names the problems.
    tests/unit/test_protocol_fast_path.py holds this to the schema."""
    if not isinstance(response, dict):
        return False
    status = response.get("status")
    if status == "ok":
        if "result" not in response:
            return False
    elif status != "error" or "error" not in response:
        return False
    if "error" in response and not isinstance(response["error"], str):
        return False
    if "retry" in response and not isinstance(response["retry"], bool):
        return False
    if "state_updates" in response and not isinstance(response["state_updates"], dict):
        return False
    if "logs" in response and not _objects_with(response["logs"], "message", ("level", "message")):
        return False
    if "events" in response:
        events = response["events"]
        if not _objects_with(events, "type", ("type",)):
            return False
        for event in events:
            if not event["type"] or ("payload" in event and not isinstance(event["payload"], dict)):
                return False
            if "dedupe_key" in event and not (event["dedupe_key"] is None or isinstance(event["dedupe_key"], str)):
                return False
    return True


def codec_problem(response: JSONDict) -> str | None:
    """What Ductile's codec (`validateResponse`) refuses beyond the schema's shape, in its words: an `ok`
    without a result message (null, empty or blank), an `error` with an empty message. A `result` that is
    not a string (an object, a number) stays accepted: Headrace stores any JSON there."""
    if response["status"] == "ok":
        result = response.get("result")
        if result is None or (isinstance(result, str) and not result.strip()):
            return "response has status=ok but no result message"
    elif response.get("error") == "":
        return "response has status=error but no error message"
    return None


class _RunFacts(TypedDict):
    """What every outcome of a subprocess carries, whatever its status."""

    exit_code: int | None
    stderr: str
    duration_ms: int


def interpret_run(raw: supervision.RawRun, *, timeout_s: float) -> Outcome:
    """Classify a finished subprocess."""
    common: _RunFacts = {"exit_code": raw.exit_code, "stderr": raw.stderr, "duration_ms": raw.duration_ms}
    if raw.spawn_error:
        return Outcome(status="failed", error=raw.spawn_error, **common)
    if raw.cancelled:
        return Outcome(status="cancelled", error="cancelled while running", retry=False, **common)
    if raw.timed_out:
        return Outcome(
            status="timed_out", error=f"plugin exceeded its deadline of {timeout_s:g}s and was killed", **common
        )
    if raw.exit_code == PERMANENT_FAILURE_EXIT:
        detail = _stderr_hint(raw.stderr)
        try:
            response = orjson.loads(raw.stdout) if raw.stdout.strip() else None
        except orjson.JSONDecodeError:
            response = None
        error = response.get("error") if isinstance(response, dict) and response.get("error") else None
        return Outcome(
            status="failed",
            error=error or f"plugin exited 78 (permanent failure){detail}",
            retry=False,
            response=response if isinstance(response, dict) else None,
            **common,
        )
    if raw.stdout_truncated:
        return Outcome(status="failed", error=f"plugin stdout exceeded {supervision.STDOUT_CAP_BYTES} bytes", **common)
    if raw.exit_code is not None and raw.exit_code < 0:
        return Outcome(
            status="failed", error=f"plugin was killed by signal {-raw.exit_code}{_stderr_hint(raw.stderr)}", **common
        )
    if not raw.stdout.strip():
        return Outcome(
            status="failed",
            error=f"plugin exited {raw.exit_code} with empty stdout{_stderr_hint(raw.stderr)}",
            **common,
        )
    try:
        response = orjson.loads(raw.stdout)
    except orjson.JSONDecodeError as exc:
        preview = raw.stdout[:120].decode("utf-8", "replace")
        return Outcome(
            status="failed",
            error=f"plugin exited {raw.exit_code} and stdout is not JSON ({exc}): {preview!r}"
            f"{_stderr_hint(raw.stderr)}",
            **common,
        )
    problem = values.problem_in_json(raw.stdout, response)
    if problem is not None:
        return Outcome(status="failed", error=f"plugin response is not accepted: {problem}", **common)
    # Ductile counts a valid reply by the reply whatever the exit code (subprocess_executor.go), so an
    # `ok` answer with exit 3 succeeded; 78 stays a permanent failure, as our protocol reference says
    return interpret_response(response, **common)


def _stderr_hint(stderr: str) -> str:
    tail = stderr.strip().splitlines()[-1:] if stderr.strip() else []
    return f"; stderr: {tail[0][:200]}" if tail else ""


def checked(outcome: Outcome) -> Outcome:
    """`outcome`, or a failed one naming why its response cannot be carried on the wire. Error and stderr
    texts get lone surrogates replaced by U+FFFD (they are ours to word; the encoder refuses those)."""
    error = values.encodable_text(outcome.error) if outcome.error is not None else None
    stderr = values.encodable_text(outcome.stderr)
    if error is not outcome.error or stderr is not outcome.stderr:
        outcome = dataclasses.replace(outcome, error=error, stderr=stderr)
    if outcome.response is None:
        return outcome
    problem = values.problem(outcome.response)
    if problem is None:
        try:
            # what the wire will carry: also turns values orjson encodes natively (datetime, UUID) into JSON
            normalized = orjson.loads(orjson.dumps(outcome.response))
        except orjson.JSONEncodeError as exc:
            problem = f"it cannot be encoded as JSON ({exc})"
        else:
            return dataclasses.replace(outcome, response=normalized)
    return dataclasses.replace(
        outcome, status="failed", response=None, error=f"plugin response is not accepted: {problem}"
    )

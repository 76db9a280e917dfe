"""Ductile protocol 2 in isolation: the request a plugin reads (`build_request`) and how what it
answered or did is classified (`interpret_response`, `interpret_run`). No processes, no I/O."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
import pytest

from services.core import envelope
from services.runner import protocol, supervision


def raw(
    stdout: bytes | str = b"",
    *,
    exit_code: int | None = 0,
    stderr: str = "",
    timed_out: bool = False,
    truncated: bool = False,
    spawn_error: str | None = None,
    cancelled: bool = False,
) -> supervision.RawRun:
    out = stdout.encode() if isinstance(stdout, str) else stdout
    return supervision.RawRun(
        stdout=out,
        stderr=stderr,
        exit_code=exit_code,
        timed_out=timed_out,
        stdout_truncated=truncated,
        duration_ms=12,
        spawn_error=spawn_error,
        cancelled=cancelled,
    )


def ok_json(**extra: Any) -> bytes:
    return orjson.dumps({"status": "ok", "result": {"x": 1}, **extra})


# --- build_request -------------------------------------------------------------------------------


def request(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "job_id": "job-1",
        "command": "poll",
        "config": {"message": "hi"},
        "secrets": {"api_key": "s3cret"},
        "state": {"count": 2},
        "payload": {"k": "v"},
        "context": {"web": {"url": "u"}},
        "event": None,
        "timeout_s": 30.0,
    }
    args.update(overrides)
    return protocol.build_request(**args)


def test_request_carries_every_protocol_2_field() -> None:
    before = envelope.now()
    req = request()
    after = envelope.now()
    assert req["protocol"] == 2
    assert req["job_id"] == "job-1" and req["command"] == "poll"
    assert req["config"] == {"message": "hi"}
    assert req["secrets"] == {"api_key": "s3cret"}
    assert req["state"] == {"count": 2}
    assert req["payload"] == {"k": "v"}
    assert req["context"] == {"web": {"url": "u"}}
    assert "event" not in req  # only handle gets an event
    deadline = envelope.parse_time(req["deadline_at"])
    assert before + timedelta(seconds=30) - timedelta(seconds=1) <= deadline <= after + timedelta(seconds=31)
    assert req["deadline_at"].endswith("Z")
    orjson.dumps(req)  # it is what goes on stdin


def test_handle_request_carries_the_event_envelope() -> None:
    event = {"type": "api.trigger", "payload": {"k": 1}}
    req = request(command="handle", event=event, context=None)
    assert req["event"] == event
    assert req["context"] == {}  # never null


# --- interpret_response -------------------------------------------------------------------------


def interpret(doc: Any, exit_code: int | None = 0) -> protocol.Outcome:
    return protocol.interpret_response(doc, exit_code=exit_code, stderr="", duration_ms=3)


def test_ok_response_succeeds() -> None:
    doc = {
        "status": "ok",
        "result": "fine",
        "events": [{"type": "a.b", "payload": {}, "dedupe_key": "k"}],
        "state_updates": {"count": 3},
        "logs": [{"level": "info", "message": "m"}],
    }
    outcome = interpret(doc)
    assert outcome.status == "succeeded" and outcome.response == doc and outcome.error is None


def test_ok_response_must_carry_a_result_and_not_a_null_one() -> None:
    # Ductile's codec (validateResponse) refuses an ok without a result message; null is none (issue 11)
    null = interpret({"status": "ok", "result": None})
    assert null.status == "failed" and "no result message" in (null.error or "")
    missing = interpret({"status": "ok"})
    assert missing.status == "failed" and "invalid" in (missing.error or "") and "result" in (missing.error or "")


def test_error_response_fails_and_is_retryable_by_default() -> None:
    outcome = interpret({"status": "error", "error": "upstream 503"})
    assert outcome.status == "failed" and outcome.error == "upstream 503" and outcome.retry is True


def test_error_response_with_retry_false_is_permanent() -> None:
    outcome = interpret({"status": "error", "error": "bad input", "retry": False})
    assert outcome.status == "failed" and outcome.retry is False


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({"status": "error"}, "error"),
        ({"status": "maybe", "result": 1}, "status"),
        ([1, 2], "object"),
        ({"status": "ok", "result": 1, "events": [{"payload": {}}]}, "type"),
        ({"status": "ok", "result": 1, "state_updates": [1]}, "object"),
        ({"status": "ok", "result": 1, "logs": [{"level": "info"}]}, "message"),
    ],
)
def test_invalid_responses_fail_with_the_reason(doc: Any, needle: str) -> None:
    outcome = interpret(doc)
    assert outcome.status == "failed"
    assert outcome.error is not None and outcome.error.startswith("plugin response is invalid")
    assert needle in outcome.error


# --- interpret_run ------------------------------------------------------------------------------


def run(r: supervision.RawRun) -> protocol.Outcome:
    return protocol.interpret_run(r, timeout_s=5)


def test_clean_run_succeeds() -> None:
    outcome = run(raw(ok_json()))
    assert outcome.status == "succeeded" and outcome.response == {"status": "ok", "result": {"x": 1}}
    assert outcome.exit_code == 0 and outcome.duration_ms == 12


def test_spawn_error_fails() -> None:
    outcome = run(raw(exit_code=None, spawn_error="cannot start /x: Permission denied"))
    assert outcome.status == "failed" and "Permission denied" in (outcome.error or "")


def test_deadline_is_timed_out_even_with_output() -> None:
    outcome = run(raw(ok_json(), exit_code=-15, timed_out=True))
    assert outcome.status == "timed_out" and "deadline of 5s" in (outcome.error or "")
    assert outcome.retry is True


def test_cancelled_run() -> None:
    outcome = run(raw(exit_code=-15, cancelled=True))
    assert outcome.status == "cancelled" and outcome.retry is False


def test_exit_78_is_a_permanent_failure() -> None:
    outcome = run(raw(exit_code=78, stderr="config broken\n"))
    assert outcome.status == "failed" and outcome.retry is False
    assert "78" in (outcome.error or "") and "config broken" in (outcome.error or "")


def test_exit_78_keeps_the_plugins_own_error() -> None:
    outcome = run(raw(orjson.dumps({"status": "error", "error": "no such repo"}), exit_code=78))
    assert outcome.status == "failed" and outcome.retry is False and outcome.error == "no such repo"


def test_exit_78_with_an_ok_answer_is_still_permanent_failure() -> None:
    outcome = run(raw(ok_json(), exit_code=78))
    assert outcome.status == "failed" and outcome.retry is False


def test_stdout_over_the_cap_fails() -> None:
    outcome = run(raw(b"x" * 100, truncated=True))
    assert outcome.status == "failed" and f"stdout exceeded {supervision.STDOUT_CAP_BYTES} bytes" in (
        outcome.error or ""
    )


def test_killed_by_signal() -> None:
    outcome = run(raw(exit_code=-9, stderr="about to die\n"))
    assert outcome.status == "failed" and "killed by signal 9" in (outcome.error or "")
    assert "about to die" in (outcome.error or "")


def test_empty_stdout_names_the_exit_code_and_the_last_stderr_line() -> None:
    outcome = run(raw(b"  \n", exit_code=1, stderr="starting\nfatal: out of flux\n"))
    assert outcome.status == "failed"
    assert outcome.error == "plugin exited 1 with empty stdout; stderr: fatal: out of flux"
    assert outcome.stderr == "starting\nfatal: out of flux\n"  # all of it kept for /job-logs


def test_non_json_stdout() -> None:
    outcome = run(raw(b"<html>oops</html>"))
    assert outcome.status == "failed" and "not JSON" in (outcome.error or "") and "<html>" in (outcome.error or "")


def test_ok_answer_with_a_nonzero_exit_counts_by_the_reply() -> None:
    # Ductile (ductile-conformance.md §6.3): a non-zero exit with a valid reply counts by the reply
    # (exit 78 excepted: ductile-plugins.md makes it a permanent failure, see the test above)
    for code in (1, 3, 77):
        outcome = run(raw(ok_json(), exit_code=code))
        assert outcome.status == "succeeded" and outcome.exit_code == code, (code, outcome)


def test_exit_78_with_an_error_reply_is_permanent() -> None:
    outcome = run(raw(orjson.dumps({"status": "error", "error": "bad input"}), exit_code=78))
    assert outcome.status == "failed" and outcome.retry is False and outcome.error == "bad input"


def test_error_answer_keeps_the_plugin_error_and_retry_flag() -> None:
    outcome = run(raw(orjson.dumps({"status": "error", "error": "nope", "retry": False}), exit_code=1))
    assert outcome.status == "failed" and outcome.error == "nope" and outcome.retry is False
    assert outcome.response is not None and outcome.response["error"] == "nope"


def test_invalid_document_on_stdout() -> None:
    outcome = run(raw(orjson.dumps({"result": 1})))
    assert outcome.status == "failed" and "invalid" in (outcome.error or "") and "status" in (outcome.error or "")

"""Ductile's reply codec (conformance doc §6.3, `codec.go` `validateResponse`) and what core adds to
emitted events and state, checked without processes: an `ok` needs a non-blank result message,
an `error` a non-empty error; emitted events get `source`, `timestamp`, `event_id`; `state_updates`
of a `fact_outputs` command become a fact (and with `mirror_object`, the whole state)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from services.core import catalog, emitted
from services.dispatcher import routing
from services.runner import attempt, plugin_state, protocol
from tests.conformance.ductile.support import FIXTURE_MANIFESTS, PLUGINS


def interpret(doc: Any) -> protocol.Outcome:
    return protocol.interpret_response(doc, exit_code=0, stderr="", duration_ms=1)


@pytest.mark.parametrize(
    "doc",
    [
        {"status": "ok"},
        {"status": "ok", "result": None},
        {"status": "ok", "result": ""},
        {"status": "ok", "result": "  \n\t"},
    ],
)
def test_ok_without_a_result_message_fails_in_ductiles_words(doc: dict[str, Any]) -> None:
    outcome = interpret(doc)
    assert outcome.status == "failed" and outcome.response is None
    assert outcome.error is not None and "result" in outcome.error


def test_blank_result_names_ductiles_message() -> None:
    outcome = interpret({"status": "ok", "result": " "})
    assert outcome.error == "plugin response is invalid: response has status=ok but no result message"


def test_error_with_an_empty_message_fails() -> None:
    outcome = interpret({"status": "error", "error": ""})
    assert outcome.status == "failed" and outcome.response is None
    assert outcome.error == "plugin response is invalid: response has status=error but no error message"


@pytest.mark.parametrize("result", ["done", {"count": 1}, [1, 2], 0, False])
def test_results_ductile_accepts_and_headrace_keeps_accepting(result: Any) -> None:
    # Ductile needs a non-blank string; Headrace also stores any other JSON value there (a superset)
    assert interpret({"status": "ok", "result": result}).status == "succeeded"


def test_emitted_events_are_stamped_alike_by_runner_and_dispatcher() -> None:
    given = {
        "type": "c.d",
        "payload": {},
        "source": "upstream",
        "event_id": "given",
        "timestamp": "2026-01-01T00:00:00Z",
    }
    outcome = interpret({"status": "ok", "result": "x", "events": [{"type": "a.b", "payload": {}}, given]})
    item = attempt.WorkItem(job_id="j1", plugin="mimic", command="emit", payload={}, attempt=2, timeout_s=5)
    published = [env for _, env in attempt.outcome_events(item, outcome, source="runner/t")]
    records = [env.data for env in published if env.type == "plugin.emitted"]
    (succeeded,) = [env for env in published if env.type == "job.succeeded"]
    # the stored result is the reply as the plugin wrote it (Ductile stores raw stdout)
    assert succeeded.data["result"]["events"][0] == {"type": "a.b", "payload": {}}
    # what the dispatcher routes, stamped from the job's outcome event
    first, second = routing.plugin_events(succeeded.data["result"], succeeded)
    assert first["source"] == "mimic" and first["timestamp"] == succeeded.time
    datetime.fromisoformat(first["timestamp"].replace("Z", "+00:00"))
    assert first["event_id"] == emitted.event_id("j1", 2, 0) != emitted.event_id("j1", 3, 0)
    assert {k: records[0][k] for k in emitted.STAMP} == {k: first[k] for k in emitted.STAMP}  # the log agrees
    assert {k: second[k] for k in emitted.STAMP} == {k: given[k] for k in emitted.STAMP}  # a plugin's own kept
    assert {k: records[1][k] for k in emitted.STAMP} == {k: given[k] for k in emitted.STAMP}


def test_fact_outputs_mirror_object_replaces_state_and_records_a_fact() -> None:
    mimic = catalog.scan([PLUGINS], {}).plugins["mimic"]
    state = {"old": 1, "cursor": "a"}
    new_state, facts = plugin_state.apply(mimic, "snapshot", state, {"cursor": "b"})
    assert new_state == {"cursor": "b"}  # the state mirrors the fact object: no shallow merge
    assert facts == [{"fact_type": "mimic.snapshot", "fact": {"cursor": "b"}}]
    # a command without a rule merges shallowly, records nothing
    assert plugin_state.apply(mimic, "merge", state, {"cursor": "b"}) == ({"old": 1, "cursor": "b"}, [])


def test_fact_outputs_without_compatibility_view_leaves_state_alone(tmp_path: Path) -> None:
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "manifest.yaml").write_text(
        "name: f\nprotocol: 2\nentrypoint: run\ncommands: [{name: poll, type: write}]\n"
        "fact_outputs: [{when: {command: poll}, from: state_updates, fact_type: f.snap}]\n"
    )
    manifest = catalog.scan([tmp_path]).plugins["f"]
    assert plugin_state.apply(manifest, "poll", {"a": 1}, {"b": 2}) == (
        None,
        [{"fact_type": "f.snap", "fact": {"b": 2}}],
    )


def test_fact_events_and_state_event_of_a_real_fixture_manifest() -> None:
    jina = catalog.scan([FIXTURE_MANIFESTS], {"sqlite_change": None}).plugins["jina-reader"]
    item = attempt.WorkItem(job_id="j", plugin="jina-reader", command="poll", payload={}, attempt=1, timeout_s=5)
    outcome = interpret({"status": "ok", "result": "unchanged", "state_updates": {"content_hash": "h"}})
    new_state, facts = plugin_state.apply(jina, "poll", {"content_hash": "g", "other": 1}, {"content_hash": "h"})
    events = attempt.outcome_events(item, outcome, source="runner/t", state=new_state, facts=facts)
    by_type = {env.type: env for _, env in events}
    assert by_type["plugin.fact_recorded"].data["fact_type"] == "jina-reader.snapshot"
    assert by_type["plugin.fact_recorded"].data["fact"] == {"content_hash": "h"}
    assert by_type["plugin.state_updated"].data["state"] == {"content_hash": "h"}


def _run(stdout: bytes, exit_code: int) -> protocol.Outcome:
    from services.runner import supervision

    raw = supervision.RawRun(
        stdout=stdout, stderr="", exit_code=exit_code, timed_out=False, stdout_truncated=False, duration_ms=1
    )
    return protocol.interpret_run(raw, timeout_s=10)


def test_exit_codes_and_replies() -> None:
    """§6.3: a reply counts by the reply whatever the exit code (an `ok` with exit 2 succeeded); 78
    makes a failure non-retryable; empty stdout and bad JSON fail naming why."""
    assert _run(b'{"status":"ok","result":"done"}', 2).status == "succeeded"
    failed = _run(b'{"status":"error","error":"nope"}', 2)
    assert failed.status == "failed" and failed.retry is not False
    permanent = _run(b'{"status":"error","error":"bad input"}', 78)
    assert permanent.status == "failed" and permanent.retry is False and permanent.error == "bad input"
    assert _run(b"", 1).status == "failed" and "empty stdout" in str(_run(b"", 1).error)
    assert "not JSON" in str(_run(b"oops", 0).error)
    assert _run(b'{"status":"error","error":"stop","retry":false}', 0).retry is False

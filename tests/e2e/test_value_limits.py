"""Values that cannot wedge anything: NUL and lone surrogates, deep nesting, huge integers, NaN.

Whatever the API or ingest accepts is projected (Postgres cannot hold U+0000 or lone surrogates:
the rows show U+FFFD, the event log keeps the exact data), later events keep being projected,
and `rebuild` replays it all to the same rows. What the limits refuse gets a JSON 400, an
`ingest.rejected`, or a failed attempt naming the limit — never a 500 or a consumer stuck on it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import sys
from typing import Any

import asyncpg
import nats
import orjson
import pytest

from services.core import envelope, subjects
from services.dispatcher import ingest
from services.projector import rebuild
from tests.support import fake_llm, laddr
from tests.support.infra import wait_until
from tests.support.stack import REPO, Stack, config_doc

MAX_DEPTH = 64  # services.core.values.MAX_DEPTH, the documented limit
#: one attempt each, and no circuit breaker tripping on the failures the test provokes
ONE_ATTEMPT = {"retry": {"max_attempts": 1}, "circuit_breaker": {"threshold": 1000}}
PLUGINS = {"echo": {}, "echo_py": {}, "odd_py": ONE_ATTEMPT, "odd_out": ONE_ATTEMPT}

JOB_COLUMNS = "job_id, plugin, command, status, payload, result, last_error, attempt, last_seq"
LOG_COLUMNS = "log_id, job_id, attempt, status, last_error, stderr, result, logs, search::text, last_seq"


def nested(levels: int) -> bytes:
    """JSON text of `levels` nested objects (built as text: the encoder refuses 255 levels)."""
    return b'{"n": ' * levels + b"1" + b"}" * levels


def body(payload: bytes, **fields: bytes) -> bytes:
    extra = b"".join(b', "' + k.encode() + b'": ' + v for k, v in fields.items())
    return b'{"payload": ' + payload + extra + b"}"


async def rows(database_url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(database_url, server_settings={"search_path": "headrace"})
    try:
        for name in ("json", "jsonb"):
            await conn.set_type_codec(
                name, encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads, schema="pg_catalog"
            )
        return {
            "jobs": [tuple(r) for r in await conn.fetch(f"SELECT {JOB_COLUMNS} FROM jobs ORDER BY job_id")],
            "logs": [tuple(r) for r in await conn.fetch(f"SELECT {LOG_COLUMNS} FROM job_logs ORDER BY log_id")],
            "rejections": [tuple(r) for r in await conn.fetch("SELECT * FROM ingest_rejections ORDER BY id")],
            "failures": [tuple(r) for r in await conn.fetch("SELECT * FROM projection_failures ORDER BY seq")],
            "checkpoint": await conn.fetchval("SELECT stream_seq FROM checkpoint WHERE name = 'events'"),
        }
    finally:
        await conn.close()


async def post_raw(s: Stack, path: str, raw: bytes) -> tuple[int, Any]:
    assert s.client is not None
    return await s.client.post(path, data=raw, headers={"Content-Type": "application/json"})


async def test_a_nul_is_projected_and_rebuilt_and_the_rest_follows(
    make_config: Any, start_stack: Any, database_url: str
) -> None:
    s = await start_stack(make_config(plugins=PLUGINS))
    client = s.client
    assert client is not None
    status, body = await post_raw(s, "/plugin/echo/poll", b'{"payload": {"message": "a\\u0000b", "k\\u0000": 1}}')
    assert status == 202, body
    nul_job = body["job_id"]
    # a subprocess plugin answering NUL in result keys and values, logs and stderr
    odd = await client.submit("odd_out", "poll", {"kind": "nul"})
    after = await client.submit("echo_py", "poll", {"message": "after"})
    for job_id in (nul_job, odd, after):
        await client.wait_job(job_id)
    await s.caught_up()
    live = await rows(database_url)
    jobs = {r[0]: r for r in live["jobs"]}
    assert jobs[nul_job][3] == "succeeded"
    assert jobs[nul_job][4] == {"message": "a\ufffdb", "k\ufffd": 1}
    assert jobs[odd][5] == {
        "status": "ok",
        "result": {"k\ufffd": "v\ufffd"},
        "logs": [{"level": "info", "message": "m\ufffd"}],
    }
    assert jobs[after][3] == "succeeded"
    odd_log = next(r for r in live["logs"] if r[1] == odd)
    assert odd_log[5] == "err\ufffdor\n" and odd_log[7] == [{"level": "info", "message": "m\ufffd"}]
    assert live["failures"] == []
    # GET /job/{id} answers what the row holds
    status, job = await client.get(f"/job/{nul_job}")
    assert status == 200 and job["result"] == jobs[nul_job][5]
    # the full-text search reads the substituted text too
    status, found = await client.get("/job-logs?query=err%EF%BF%BDor")
    assert status == 200, found
    # the event log keeps the exact data
    assert s.api.bus is not None
    history = await s.api.bus.history(subjects.EVENTS, subjects.job_events(nul_job))
    queued = next(env for _, env in history if env.type == "job.queued")
    assert queued.data["payload"] == {"message": "a\x00b", "k\x00": 1}

    stats = await rebuild.rebuild(s.api.bus, database_url)
    assert stats["checkpoint"] == live["checkpoint"]
    assert await rows(database_url) == live
    # and `headrace rebuild`, the command (it exited 1 on the NUL)
    assert s.config.nats_url and s.config.path
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        "-c",
        str(s.config.path),
        "rebuild",
        cwd=str(REPO),
        env={**os.environ, "NATS_URL": s.config.nats_url, "DATABASE_URL": database_url, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, output.decode(errors="replace")[-2000:]
    assert await rows(database_url) == live


async def test_get_job_folded_from_the_log_shows_the_substitute(hr: Stack) -> None:
    """Before the projector writes the row, GET /job/{id} folds the log: the same substitution applies."""
    await hr.projector.stop()
    status, body = await post_raw(hr, "/plugin/echo_py/poll", b'{"payload": {"message": "x\\u0000y"}}')
    assert status == 202
    assert hr.client is not None
    job = await hr.client.wait_job(body["job_id"])
    assert job["result"]["result"] == "Echoed: x\ufffdy"
    assert job["result"]["logs"] == [{"level": "info", "message": "Echoed: x\ufffdy"}]


async def test_limits_of_api_bodies_are_json_400s(hr: Stack) -> None:
    limit = MAX_DEPTH
    # the body object is one level of the limit: the deepest accepted payload has limit - 1 levels
    ok = body(nested(limit - 1))
    status, answer = await post_raw(hr, "/plugin/echo_py/poll", ok)
    assert status == 202, answer
    for raw, needle in [
        (body(nested(limit)), f"nested deeper than {limit} levels"),
        (body(nested(300)), f"nested deeper than {limit} levels"),
        (body(nested(2000)), "malformed JSON"),
        (b'{"payload": {"n": 123456789012345678901234567890}}', "64-bit"),
        (b'{"payload": {"n": -9223372036854775809}}', "64-bit"),
        (b'{"payload": {"n": 1e400}}', "malformed JSON"),
        (b'{"payload": {"n": NaN}}', "malformed JSON"),
        (b'{"payload": {"s": "\\ud800"}}', "malformed JSON"),
        (b'{"payload": {"s": "\xff"}}', "malformed JSON"),
    ]:
        status, answer = await post_raw(hr, "/plugin/echo_py/poll", raw)
        assert status == 400, (raw[:60], status, answer)
        assert needle in answer["error"] and answer["code"] == "bad_request", answer
    # the edges that fit are accepted unchanged
    long_key = "k" * 10_000  # (under the offload threshold, so the result comes back inline)
    edges = {"max": 2**64 - 1, "min": -(2**63), "big": 1.5e300, "": "empty key", long_key: 0}
    status, answer = await post_raw(hr, "/plugin/echo_py/handle", orjson.dumps({"payload": edges}))
    assert status == 202, answer
    assert hr.client is not None
    job = await hr.client.wait_job(answer["job_id"])
    assert job["status"] == "succeeded", job
    assert job["result"]["result"]["echo"] == edges


async def test_an_out_of_range_integer_is_refused_only_where_the_body_uses_it(hr: Stack) -> None:
    # keys next to `payload` are ignored (as in Ductile), so a huge integer there changes nothing
    raw = b'{"payload": {"n": 1}, "note": -12487568521670698666557440}'
    status, answer = await post_raw(hr, "/plugin/echo_py/handle", raw)
    assert status == 202, answer
    assert hr.client is not None
    job = await hr.client.wait_job(answer["job_id"])
    assert job["status"] == "succeeded" and job["result"]["result"]["echo"] == {"n": 1}, job
    status, answer = await post_raw(hr, "/plugin/echo_py/handle", b'{"payload": {"n": [1, 18446744073709551616]}}')
    assert status == 400 and "64-bit" in answer["error"] and answer["field"] == "payload", answer


async def test_ingest_events_beyond_the_limits_are_rejected_and_the_rest_accepted(
    make_config: Any, start_stack: Any
) -> None:
    s = await start_stack(make_config())
    assert s.config.nats_url
    nc = await nats.connect(s.config.nats_url)
    try:
        js = nc.jetstream()
        deep = await js.publish("ingest.thing", b'{"type": "thing", "payload": ' + nested(300) + b"}")
        big = await js.publish("ingest.thing", b'{"type": "thing", "payload": {"n": 123456789012345678901234567890}}')
        nul = await js.publish("ingest.thing", b'{"type": "thing", "payload": {"k\\u0000": "v\\u0000"}}')
        bad_nul = await js.publish("ingest.thing", b"not json \x00 here")
    finally:
        await nc.close()
    assert s.client is not None
    client = s.client

    async def rejected() -> Any:
        status, body = await client.get("/events/rejected")
        assert status == 200
        by_seq = {e["ingest_seq"]: e for e in body["events"]}
        return by_seq if {deep.seq, big.seq, bad_nul.seq} <= set(by_seq) else None

    by_seq = await wait_until(rejected, timeout_s=15, what="the rejections projected")
    assert f"nested deeper than {MAX_DEPTH} levels" in by_seq[deep.seq]["reason"]
    assert "64-bit" in by_seq[big.seq]["reason"]
    assert by_seq[bad_nul.seq]["raw"] == "not json \ufffd here"
    assert nul.seq not in by_seq
    assert s.api.bus is not None
    accepted = await s.api.bus.last_message(subjects.EVENTS, subjects.ingest_event("accepted"))
    assert accepted is not None and accepted[1].id == f"{ingest.cause_id(nul.seq)}:accepted"
    assert accepted[1].data["payload"] == {"k\x00": "v\x00"}
    await s.caught_up()


async def test_plugin_answers_beyond_the_limits_fail_the_attempt(make_config: Any, start_stack: Any) -> None:
    s = await start_stack(make_config(plugins=PLUGINS))
    client = s.client
    assert client is not None
    expected = {
        ("odd_py", "surrogate"): "lone surrogate",
        ("odd_py", "surrogate_key"): "lone surrogate",
        ("odd_py", "deep"): f"nested deeper than {MAX_DEPTH} levels",
        ("odd_py", "emit_deep"): f"nested deeper than {MAX_DEPTH} levels",
        ("odd_py", "bigint"): "64-bit",
        ("odd_py", "nan"): "NaN",
        ("odd_py", "int_key"): "key is not a string",
        ("odd_py", "set"): "cannot be encoded as JSON",
        ("odd_py", "log_surrogate"): "lone surrogate",
        ("odd_py", "raise_surrogate"): "plugin raised ValueError: broken \ufffd text",
        ("odd_out", "invalid_utf8"): "not valid UTF-8",
        ("odd_out", "deep"): f"nested deeper than {MAX_DEPTH} levels",
        ("odd_out", "bigint"): "64-bit",
    }
    jobs = {key: await client.submit(key[0], "poll", {"kind": key[1]}) for key in expected}
    plain = await client.submit("odd_py", "poll", {"kind": "plain"})
    for key, job_id in jobs.items():
        job = await client.wait_job(job_id)
        assert job["status"] == "dead", (key, job)
        assert expected[key] in (job["last_error"] or ""), (key, job["last_error"])
    assert (await client.wait_job(plain))["status"] == "succeeded"
    status, job = await client.get(f"/job/{jobs[('odd_py', 'nan')]}")
    assert status == 200
    await s.caught_up()


async def test_a_result_too_wordy_for_a_tsvector_is_projected(
    make_config: Any, start_stack: Any, database_url: str
) -> None:
    """job_logs.search indexes the first 100 000 characters: the whole text could exceed the 1 MiB of a tsvector."""
    s = await start_stack(make_config(plugins=PLUGINS, offload={"threshold_bytes": 900_000}))
    assert s.client is not None
    wordy = await s.client.submit("odd_py", "poll", {"kind": "wordy"})
    after = await s.client.submit("echo_py", "poll", {"message": "after"})
    assert (await s.client.wait_job(wordy))["status"] == "succeeded"
    await s.client.wait_job(after)
    await s.caught_up()
    live = await rows(database_url)
    assert {r[0] for r in live["jobs"]} == {wordy, after} and live["failures"] == []
    status, found = await s.client.get("/job-logs?query=1f3a")
    assert status == 200 and [e["job_id"] for e in found["logs"]] == [wordy], found


async def test_an_event_no_fold_can_read_is_recorded_and_passed_over(hr: Stack, database_url: str) -> None:
    """Any publisher on evt.> could store an event the folds cannot read: it is recorded in
    projection_failures, the events after it are projected, and rebuild records the same."""
    assert hr.api.bus is not None and hr.client is not None
    bad_id = envelope.new_id()
    bad = envelope.make(
        "job.queued",
        source="test",
        job_id=bad_id,
        data={"plugin": "echo", "command": "poll", "created_at": "not a time"},
    )
    await hr.api.bus.publish(subjects.job_event(bad_id, "queued"), bad)
    after = await hr.client.submit("echo_py", "poll", {"message": "after"})
    assert (await hr.client.wait_job(after))["status"] == "succeeded"
    await hr.caught_up()
    live = await rows(database_url)
    assert [(f[1], f[2]) for f in live["failures"]] == [(bad.id, "job.queued")]
    assert "not a time" in live["failures"][0][3]
    assert {r[0] for r in live["jobs"]} == {after}
    await rebuild.rebuild(hr.api.bus, database_url)
    assert await rows(database_url) == live


async def test_an_llm_asking_for_a_tool_with_arguments_too_deep_gets_a_tool_error(
    make_config: Any, start_stack: Any
) -> None:
    fake = await fake_llm.FakeLLM().start()
    try:
        config = make_config(
            plugins=laddr.plugins(), agents={"deep": laddr.agent(fake, "m-deep", tools=["echo_py.poll"])}
        )
        s = await start_stack(config)
        fake.script(
            "m-deep",
            fake_llm.tool_calls(("echo_py__poll", nested(300).decode())),
            fake_llm.text("gave up on that tool"),
        )
        assert s.client is not None
        status, body = await s.client.post("/api/jobs", json={"pipeline_name": "deep", "inputs": {"task": "go"}})
        assert status == 200, body
        done = await s.client.wait_job(body["job_id"])
        assert done["status"] == "succeeded", done
        await laddr.projected(s)
        trail = await laddr.traces(s, body["job_id"])
        errors = [t["payload"] for t in trail if t["event_type"] == "tool_error"]
        assert len(errors) == 1 and f"nested deeper than {MAX_DEPTH} levels" in str(errors[0]), trail
    finally:
        await fake.stop()


async def test_a_webhook_body_beyond_the_limits_is_a_json_400(
    make_config: Any, start_stack: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "value-limits-webhook-secret"
    monkeypatch.setenv("HR_TEST_LIMITS_SECRET", secret)
    s = await start_stack(
        make_config(
            webhooks=[
                {
                    "name": "limits",
                    "path": "/webhook/limits",
                    "plugin": "echo_py",
                    "secret_ref": "HR_TEST_LIMITS_SECRET",
                    "signature_header": "X-Signature",
                }
            ]
        )
    )
    assert s.client is not None
    for raw, expected in [
        (nested(300), 400),
        (b'{"n": 123456789012345678901234567890}', 400),
        (b'{"n": "a\\u0000b"}', 202),
    ]:
        signature = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
        status, answer = await s.client.post(
            "/webhook/limits",
            data=raw,
            token=None,
            headers={"X-Signature": signature, "Content-Type": "application/json"},
        )
        assert status == expected, (raw[:40], status, answer)
        if expected == 400:
            assert answer["code"] == "bad_request" and "not accepted" in answer["error"], answer
        else:
            assert (await s.client.wait_job(answer["job_id"]))["status"] == "succeeded"
    await s.caught_up()


async def test_a_message_that_is_no_envelope_is_recorded_and_passed_over(hr: Stack, database_url: str) -> None:
    assert hr.api.bus is not None and hr.client is not None
    ack = await hr.api.bus.js.publish("evt.junk.raw", b"\x00 not an envelope \xff")
    after = await hr.client.submit("echo_py", "poll", {"message": "after"})
    await hr.client.wait_job(after)
    await hr.caught_up()
    live = await rows(database_url)
    assert [(f[0], f[2]) for f in live["failures"]] == [(ack.seq, "projector.undecodable")]
    assert "not an envelope" in live["failures"][0][3]
    await rebuild.rebuild(hr.api.bus, database_url)
    assert await rows(database_url) == live


async def test_a_body_larger_than_the_buses_max_payload_is_a_413_and_the_api_stays_up(
    make_config: Any, start_stack: Any
) -> None:
    # api.max_body_bytes above the embedded nats-server's max_payload (8 MB): the command cannot be stored,
    # which is a permanent 413 naming the limit, never a 503 that invites a retry of the same request
    api = {**config_doc()["api"], "max_body_bytes": 16 * 1024 * 1024}
    s = await start_stack(make_config(api=api))
    big = orjson.dumps({"payload": {"blob": "x" * (9 * 1024 * 1024)}})
    status, answer = await post_raw(s, "/plugin/echo_py/poll", big)
    assert status == 413 and answer["code"] == "payload_too_large" and "max_payload" in answer["error"], answer
    status, answer = await post_raw(s, "/plugin/echo_py/poll", b'{"payload": {"n": 1}}')
    assert status == 202, answer
    assert s.client is not None
    assert (await s.client.wait_job(answer["job_id"]))["status"] == "succeeded"

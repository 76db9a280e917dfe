"""Laddr's WebSockets (laddr-conformance.md §1.19, §2 WS auth) over real HTTP against the fake LLM:
/ws/events (each trace once, Laddr's four keys, the throttle's batches, the recent traces on connect),
/ws/prompts/{id} (first `traces`, increments, `complete` with the whole tree and a normal close —
also for a failed run that Laddr would call `incomplete` — nothing but the empty first message for
an unknown id), /ws/logs/{name} (an error, then close), the handshake rules (?api_key=, X-API-Key,
Bearer, ?token=; 403 before the upgrade), the per-token stream slots and the consumer's release."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jsonschema
import orjson
import pytest

from services.api import laddr_openapi, laddr_spans, laddr_ws
from services.core import envelope, subjects
from tests.support import fake_llm, laddr, stack
from tests.support.fake_llm import FakeLLM
from tests.support.infra import wait_until
from tests.support.stack import TOKENS, Stack

KEY = TOKENS["jobs_ro"][0]
RUNNER = TOKENS["laddr_rw"][0]  # the agents call a write tool: the caller needs plugin:rw


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def agents(fake: FakeLLM, **extra: Any) -> dict[str, Any]:
    return {"echoer": laddr.agent(fake, "m-echo", tools=["echo_py.poll"], **extra)}


async def traced_stack(make_config: Any, start_stack: Any, fake: FakeLLM, **extra: Any) -> Stack:
    return await start_stack(make_config(plugins=laddr.plugins(), agents=agents(fake), **extra))


def one_tool_then_answer(fake: FakeLLM, *, delay_s: float = 0.0) -> None:
    first = fake_llm.tool_calls(("echo_py__poll", {"message": "ping"}))
    fake.script(
        "m-echo",
        fake_llm.delayed(delay_s, first) if delay_s else first,
        fake_llm.delayed(delay_s, fake_llm.text("pong")) if delay_s else fake_llm.text("pong"),
    )


def ws_url(s: Stack, path: str) -> str:
    return s.url.replace("http://", "ws://") + path


async def connect(
    session: aiohttp.ClientSession, s: Stack, path: str, *, key: str | None = KEY, headers: dict[str, str] | None = None
) -> aiohttp.ClientWebSocketResponse:
    if key is not None:
        path += ("&" if "?" in path else "?") + f"api_key={key}"
    return await session.ws_connect(ws_url(s, path), headers=headers or {}, autoping=True)


async def receive(ws: aiohttp.ClientWebSocketResponse, timeout_s: float) -> dict[str, Any] | None:
    """The next JSON message; None when the server closed the socket; TimeoutError when nothing came."""
    msg = await ws.receive(timeout=timeout_s)
    if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
        return None
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return orjson.loads(msg.data)


async def until_closed(ws: aiohttp.ClientWebSocketResponse, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    out = []
    deadline = time.monotonic() + timeout_s
    while (message := await receive(ws, max(0.1, deadline - time.monotonic()))) is not None:
        out.append(message)
    return out


async def quiet_for(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> list[dict[str, Any]]:
    """Every message of the next `seconds` (the socket must stay open)."""
    out = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            message = await receive(ws, left)
        except TimeoutError:
            break
        assert message is not None, "the server closed the socket"
        out.append(message)
    return out


#: the schema of each message type in GET /api/openapi.json (the batch socket's `traces` hold raw rows)
MESSAGE_SCHEMAS = {
    "trace": "WsTrace",
    "batch": "WsBatch",
    "traces": "WsTraces",
    "complete": "WsComplete",
    "error": "WsError",
}


def conforms(messages: list[dict[str, Any]], *, rows: bool = False) -> None:
    """Every message matches the schema the document gives it."""
    for message in messages:
        name = "WsBatchTraces" if rows and message["type"] == "traces" else MESSAGE_SCHEMAS[message["type"]]
        schema = {"$ref": f"#/components/schemas/{name}", "components": {"schemas": laddr_openapi.SCHEMAS}}
        jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(message)


def flat(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """/ws/events messages with the batches unpacked."""
    out = []
    for m in messages:
        assert m["type"] in ("trace", "batch"), m
        out.extend(m["events"] if m["type"] == "batch" else [m])
    return out


def span_ids(spans: list[dict[str, Any]]) -> list[int]:
    out = []
    for span in spans:
        out.append(span["id"])
        out.extend(span_ids(span["children"]))
    return out


async def rows_of(s: Stack, *job_ids: str) -> list[dict[str, Any]]:
    """The traces GET /api/traces shows for these jobs."""
    out = []
    for job_id in job_ids:
        out.extend(await laddr.traces(s, job_id))
    return sorted(out, key=lambda r: r["id"])


async def tree_jobs(s: Stack, root: str) -> list[str]:
    """The job ids of the root's tree (GET /job/{id}/tree reads the read models: wait for the projection)."""
    await laddr.projected(s)
    status, tree = await s.client.get(f"/job/{root}/tree")
    assert status == 200, tree
    return [node["job_id"] for node in tree]


async def run_agent(s: Stack) -> str:
    status, body = await s.client.post(
        "/api/jobs", json={"pipeline_name": "echoer", "inputs": {"task": "ping it"}}, token=RUNNER
    )
    assert status == 200, body
    return str(body["job_id"])


async def run_prompt(s: Stack) -> str:
    status, body = await s.client.post(
        "/api/prompts", json={"prompt_name": "echoer", "inputs": {"task": "ping it"}}, token=RUNNER
    )
    assert status == 200, body
    return str(body["prompt_id"])


# --- /ws/events ---------------------------------------------------------------------------------------


async def test_ws_events_sends_every_trace_once_with_laddrs_keys(
    make_config: Any, start_stack: Any, fake: FakeLLM, session: aiohttp.ClientSession
) -> None:
    s = await traced_stack(make_config, start_stack, fake)
    one_tool_then_answer(fake)
    ws = await connect(session, s, "/ws/events")
    job_id = await run_agent(s)
    await s.client.wait_job(job_id)
    rows = await rows_of(s, job_id)
    assert len(rows) >= 5
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + 15
    while len([e for e in flat(got) if e["data"]["job_id"] == job_id]) < len(rows) and time.monotonic() < deadline:
        got.extend(await quiet_for(ws, 0.5))
    got.extend(await quiet_for(ws, 1.5))  # Laddr re-sends a trace on every poll for 5 s; nothing may come again
    await ws.close()
    conforms(got)
    mine = [e for e in flat(got) if e["data"]["job_id"] == job_id]
    assert Counter(e["data"]["event_type"] for e in mine) == Counter(r["event_type"] for r in rows)
    for event in mine:
        assert event == {
            "type": "trace",
            "data": {
                "job_id": job_id,
                "agent_name": "echoer",
                "event_type": event["data"]["event_type"],
                "timestamp": event["data"]["timestamp"],
            },
        }
    assert sorted(e["data"]["timestamp"] for e in mine) == sorted(r["timestamp"] for r in rows)
    # a run's traces come faster than one per THROTTLE_S: some arrive held together, as Laddr's batches
    assert any(m["type"] == "batch" and 2 <= len(m["events"]) <= laddr_ws.BATCH_SIZE for m in got), got


async def test_ws_events_starts_with_the_traces_of_the_last_seconds(
    make_config: Any, start_stack: Any, fake: FakeLLM, session: aiohttp.ClientSession
) -> None:
    s = await traced_stack(make_config, start_stack, fake)
    one_tool_then_answer(fake)
    job_id = await run_agent(s)
    await s.client.wait_job(job_id)
    rows = await rows_of(s, job_id)
    connected_at = envelope.now()
    ws = await connect(session, s, "/ws/events")
    got = [e["data"] for e in flat(await quiet_for(ws, 1.5))]
    await ws.close()
    assert {e["job_id"] for e in got} == {job_id}
    # the window is REPLAY_S before the connect: every trace inside it, none twice (1 s of slack at its edge)
    recent = [
        r for r in rows if (connected_at - envelope.parse_time(r["timestamp"])).total_seconds() < laddr_ws.REPLAY_S - 1
    ]
    assert recent, "the run took longer than the replay window"
    assert Counter(e["timestamp"] for e in got) <= Counter(r["timestamp"] for r in rows)
    assert set(r["timestamp"] for r in recent) <= {e["timestamp"] for e in got}
    assert len(got) == len({e["timestamp"] for e in got})


def test_throttle_sends_at_once_then_holds_and_batches_and_never_keeps_a_trace_waiting() -> None:
    throttle = laddr_ws.Throttle()
    events = [{"type": "trace", "data": {"n": n}} for n in range(8)]
    assert throttle.add(events[0], now=10.0) == [events[0]]  # the first goes out at once
    assert [throttle.add(e, now=10.01) for e in events[1:5]] == [[], [], [], []]
    assert throttle.add(events[5], now=10.02) == [{"type": "batch", "events": events[1:6]}]  # five held: a batch
    assert throttle.add(events[6], now=10.03) == []
    assert throttle.due(now=10.05) == []  # not yet THROTTLE_S since the batch
    assert throttle.wait_s(now=10.05) == pytest.approx(0.07)
    assert throttle.due(now=10.13) == [events[6]]  # one held trace goes out alone, not stuck (Laddr's would be)
    assert throttle.add(events[7], now=10.2) == []  # within THROTTLE_S of the last send
    assert throttle.due(now=10.24) == [events[7]]
    assert throttle.wait_s(now=10.3) == laddr_ws.IDLE_S  # nothing held: the loop just idles


# --- /ws/prompts/{prompt_id} ---------------------------------------------------------------------------


async def test_ws_prompt_of_a_finished_prompt_sends_traces_then_complete_and_closes(
    make_config: Any, start_stack: Any, fake: FakeLLM, session: aiohttp.ClientSession
) -> None:
    s = await traced_stack(make_config, start_stack, fake)
    one_tool_then_answer(fake)
    prompt_id = await run_prompt(s)
    await s.client.wait_job(prompt_id, timeout_s=30)
    jobs = await tree_jobs(s, prompt_id)
    rows = await rows_of(s, *jobs)
    ws = await connect(session, s, f"/ws/prompts/{prompt_id}")
    messages = await until_closed(ws)
    assert ws.close_code == 1000
    assert [m["type"] for m in messages] == ["traces", "complete"]
    conforms(messages)
    first, complete = messages
    assert first["data"]["count"] == len(rows) and sorted(span_ids(first["data"]["spans"])) == [r["id"] for r in rows]
    _, view = await s.client.get(f"/api/prompts/{prompt_id}")
    assert complete["data"]["status"] == view["status"] == "completed"
    assert complete["data"]["outputs"] == view["outputs"] and complete["data"]["error"] is None
    assert sorted(span_ids(complete["data"]["spans"])) == [r["id"] for r in rows]
    # the agent's own traces are in the prompt's tree (Laddr runs the agent under the prompt's id)
    assert {"task_start", "tool_call", "tool_result", "task_complete"} <= {r["event_type"] for r in rows}
    by_id = {r["id"]: r for r in rows}

    def check(spans: list[dict[str, Any]]) -> None:
        for span in spans:
            row = by_id[span["id"]]
            payload = row["payload"]
            assert set(span) >= {
                "id",
                "name",
                "type",
                "start_time",
                "agent",
                "event_type",
                "input",
                "output",
                "metadata",
                "children",
            }
            assert span["event_type"] == row["event_type"] and span["start_time"] == row["timestamp"]
            assert span["type"] == laddr_spans.span_type(row["event_type"])
            assert span["metadata"] == {
                "duration_ms": span["metadata"]["duration_ms"],
                "tokens": span["metadata"]["tokens"],
                "cost": span["metadata"]["cost"],
                **payload,
            }
            assert span["input"] == payload.get("inputs", payload.get("params", {}))
            if row["event_type"] == "llm_usage":
                assert span["metadata"]["tokens"] == payload["total_tokens"]
            if row["event_type"] == "task_complete":
                assert isinstance(span["metadata"]["duration_ms"], int) and span["metadata"]["duration_ms"] >= 0
            for child in span["children"]:
                assert child["parent_id"] == span["id"]  # nested exactly where parent_id points
            check(span["children"])

    check(complete["data"]["spans"])
    # nested exactly as the projector resolved each trace's parent (traces.parent_id), across the tree's jobs
    parents = {
        r["id"]: r["parent_id"]
        for r in await s.api.pool.fetch("SELECT id, parent_id FROM traces WHERE job_id = ANY($1::text[])", jobs)
    }
    assert sorted(parents) == [r["id"] for r in rows]
    placed: dict[int, int | None] = {}

    def walk(spans: list[dict[str, Any]], parent: int | None) -> None:
        for span in spans:
            placed[span["id"]] = parent
            assert span["parent_id"] == parents[span["id"]]
            walk(span["children"], span["id"])

    walk(complete["data"]["spans"], None)
    assert placed == parents
    assert any(p is not None for p in parents.values())  # the runtime writes real parents
    # the prompt's delegation is the root; the agent's run hangs under it, its traces under its task_start
    (root,) = complete["data"]["spans"]
    assert root["event_type"] == "delegation" and [c["event_type"] for c in root["children"]] == ["task_start"]


async def test_ws_prompt_streams_increments_live_then_completes(
    make_config: Any, start_stack: Any, fake: FakeLLM, session: aiohttp.ClientSession
) -> None:
    s = await traced_stack(make_config, start_stack, fake)
    one_tool_then_answer(fake, delay_s=0.8)
    prompt_id = await run_prompt(s)
    ws = await connect(session, s, f"/ws/prompts/{prompt_id}")
    messages = await until_closed(ws, timeout_s=40)
    assert ws.close_code == 1000
    conforms(messages)
    kinds = [m["type"] for m in messages]
    assert kinds[-1] == "complete" and set(kinds[:-1]) == {"traces"} and len(kinds) >= 3, kinds
    streamed = [i for m in messages[:-1] for i in span_ids(m["data"]["spans"])]
    assert len(streamed) == len(set(streamed)), "a trace was sent twice"
    assert [m["data"]["count"] for m in messages[:-1]] == [len(span_ids(m["data"]["spans"])) for m in messages[:-1]]
    rows = await rows_of(s, *await tree_jobs(s, prompt_id))
    assert sorted(streamed) == sorted(span_ids(messages[-1]["data"]["spans"])) == [r["id"] for r in rows]
    assert messages[-1]["data"]["status"] == "completed"


async def test_ws_prompt_completes_a_run_laddr_would_leave_incomplete(
    make_config: Any, start_stack: Any, fake: FakeLLM, session: aiohttp.ClientSession
) -> None:
    """An agent out of iterations is Laddr's `incomplete`, which its socket never completes: ours does."""
    s = await start_stack(
        make_config(plugins=laddr.plugins(agent={"retry": {"max_attempts": 1}}), agents=agents(fake, max_iterations=2))
    )
    for _ in range(2):
        fake.script("m-echo", fake_llm.delayed(0.4, fake_llm.tool_calls(("echo_py__poll", {"message": "again"}))))
    job_id = await run_agent(s)
    ws = await connect(session, s, f"/ws/prompts/{job_id}")
    messages = await until_closed(ws, timeout_s=40)
    assert ws.close_code == 1000
    complete = messages[-1]
    assert complete["type"] == "complete", messages
    assert complete["data"]["status"] == "failed"
    assert complete["data"]["outputs"] == {"error": complete["data"]["error"]}  # as GET /api/jobs/{id} shows it
    assert "max_iterations" in complete["data"]["error"]
    assert "task_error" in {r["event_type"] for r in await rows_of(s, job_id)}


async def test_ws_prompt_of_an_unknown_id_sends_the_empty_first_message_and_waits(
    make_config: Any, start_stack: Any, fake: FakeLLM, session: aiohttp.ClientSession
) -> None:
    s = await traced_stack(make_config, start_stack, fake)
    ws = await connect(session, s, "/ws/prompts/00000000-0000-4000-8000-000000000001")
    assert await quiet_for(ws, 1.5) == [{"type": "traces", "data": {"spans": [], "count": 0}}]
    assert not ws.closed
    await ws.close()


# --- /ws/logs/{container_name} --------------------------------------------------------------------------


async def test_ws_logs_sends_an_error_then_closes(
    make_config: Any, start_stack: Any, fake: FakeLLM, session: aiohttp.ClientSession
) -> None:
    s = await traced_stack(make_config, start_stack, fake)
    ws = await connect(session, s, "/ws/logs/api")
    messages = await until_closed(ws, timeout_s=5)
    assert ws.close_code == 1000
    conforms(messages)
    assert len(messages) == 1 and messages[0]["type"] == "error"
    assert messages[0]["data"]["error"].startswith("Docker SDK not available")


# --- the handshake, the slots, the consumer --------------------------------------------------------------


async def handshake(session: aiohttp.ClientSession, s: Stack, path: str, headers: dict[str, str]) -> int:
    try:
        ws = await session.ws_connect(ws_url(s, path), headers=headers)
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status
    await ws.close()
    return 101


async def test_ws_auth_follows_laddrs_order_and_refuses_with_403_before_the_upgrade(
    make_config: Any, start_stack: Any, fake: FakeLLM, session: aiohttp.ClientSession
) -> None:
    s = await traced_stack(make_config, start_stack, fake)
    bearer = {"Authorization": f"Bearer {KEY}"}
    cases = [
        (f"/ws/events?api_key={KEY}", {}, 101),
        ("/ws/events", {"X-API-Key": KEY}, 101),
        ("/ws/events", bearer, 101),
        (f"/ws/events?token={KEY}", {}, 101),  # as GET /events
        ("/ws/events", {}, 403),
        ("/ws/events?api_key=wrong", {}, 403),
        ("/ws/events?api_key=wrong", bearer, 403),  # the first credential present is the only one that counts
        ("/ws/events", {"X-API-Key": "wrong", **bearer}, 403),
        (f"/ws/events?api_key={TOKENS['events_ro'][0]}", {}, 403),  # a valid token without jobs:ro
        (f"/ws/prompts/x?api_key={stack.ADMIN}", {}, 101),
        ("/ws/prompts/x", {}, 403),
        (f"/ws/logs/api?api_key={KEY}", {}, 101),
        ("/ws/logs/api", {"X-API-Key": "wrong"}, 403),
    ]
    got = [(path, sorted(headers), await handshake(session, s, path, headers)) for path, headers, _ in cases]
    assert got == [(path, sorted(headers), want) for path, headers, want in cases]
    # over plain HTTP a WebSocket route answers as any route: 401 without a token, 426 with one
    for headers, want in (
        ({}, 401),
        ({"X-API-Key": "wrong"}, 401),
        ({"X-API-Key": TOKENS["events_ro"][0]}, 403),
        ({"X-API-Key": KEY}, 426),
    ):
        async with session.get(s.url + "/ws/events", headers=headers) as resp:
            assert resp.status == want, (headers, resp.status)
            if want == 426:
                assert resp.headers["Upgrade"] == "websocket"


async def test_ws_sockets_share_the_tokens_stream_slots_with_sse(
    make_config: Any, start_stack: Any, fake: FakeLLM, session: aiohttp.ClientSession
) -> None:
    api = {**stack.config_doc()["api"], "limits": {"sse_per_token": 2}}
    s = await traced_stack(make_config, start_stack, fake, api=api)
    first = await connect(session, s, "/ws/events")
    second = await connect(session, s, "/ws/prompts/nope")
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await connect(session, s, "/ws/logs/api")
    assert refused.value.status == 429
    async with session.get(s.url + "/events", headers={"Authorization": f"Bearer {KEY}"}) as sse:
        assert sse.status == 429 and (await sse.json())["code"] == "too_many_streams"
    other = await connect(session, s, "/ws/events", key=stack.ADMIN)  # another token has its own slots
    await other.close()
    await first.close()

    async def freed() -> bool:
        try:
            ws = await connect(session, s, "/ws/events")
        except aiohttp.WSServerHandshakeError:
            return False
        await ws.close()
        return True

    await wait_until(freed, timeout_s=10, what="the closed socket's slot to be free again")
    await second.close()


async def test_ws_consumer_goes_away_with_the_client(
    make_config: Any, start_stack: Any, fake: FakeLLM, session: aiohttp.ClientSession
) -> None:
    s = await traced_stack(make_config, start_stack, fake)
    bus = s.api.bus
    assert bus is not None

    async def consumers() -> int:
        return int((await bus.js.stream_info(subjects.EVENTS)).state.consumer_count)

    before = await consumers()
    sockets = [await connect(session, s, "/ws/events"), await connect(session, s, "/ws/prompts/nope")]
    await asyncio.sleep(0.3)
    assert await consumers() == before + 2
    for ws in sockets:
        await ws.close()

    async def released() -> bool:
        return await consumers() == before

    await wait_until(released, timeout_s=10, what="the sockets' consumers to go away")


# --- spans (pure) ------------------------------------------------------------------------------------------


def trace_env(job_id: str, n: int, kind: str, *, parent: str | None = None, **payload: Any) -> envelope.Envelope:
    data: dict[str, Any] = {"agent_name": "a", "attempt": 1, "payload": payload}
    if parent is not None:
        data["parent"] = parent
    return envelope.make(f"trace.{kind}", source="test", job_id=job_id, id=f"{job_id}:1:trace:{n}", data=data)


def test_spans_nest_by_the_parent_trace_and_survive_increments() -> None:
    traces = laddr_spans.Traces()
    start = trace_env("j", 1, "task_start", inputs={"task": "t"})
    rows = [
        traces.add(10, start),
        traces.add(11, trace_env("j", 2, "llm_usage", parent=start.id, prompt_tokens=3, completion_tokens=2)),
        traces.add(12, trace_env("j", 3, "tool_call", parent=start.id, tool="echo", params={"m": 1})),
        traces.add(14, trace_env("j", 4, "task_complete", parent=start.id, result={"status": "success"})),
        traces.add(15, trace_env("k", 1, "task_start", parent=start.id)),  # a child job's run under its caller
        traces.add(16, trace_env("j", 5, "tool_result", parent="never-seen", tool="echo")),
    ]
    assert traces.add(13, envelope.make("job.queued", source="test", job_id="j", data={})) is None
    assert [r["parent_id"] for r in rows] == [None, 10, 10, 10, 10, None]
    (root, orphan) = traces.tree(rows)
    assert root["id"] == 10 and orphan["id"] == 16 and orphan["children"] == []
    assert [c["id"] for c in root["children"]] == [11, 12, 14, 15]
    llm, tool, done, _child = root["children"]
    assert llm["type"] == "llm" and llm["metadata"]["tokens"] == 5  # no total_tokens: prompt + completion
    assert tool["name"] == "echo" and tool["type"] == "tool" and tool["input"] == {"m": 1}
    assert done["output"] == {"status": "success"} and isinstance(done["metadata"]["duration_ms"], int)
    assert root["input"] == {"task": "t"} and root["name"] == "a" and root["type"] == "agent"
    # an increment holds only new traces: one whose parent came earlier is a root there, naming its parent
    late = traces.add(17, trace_env("k", 2, "autonomous_think", parent="k:1:trace:1"))
    assert late is not None
    (alone,) = traces.tree([late])
    assert alone["parent_id"] == 15 and alone["type"] == "reasoning"


# --- /ws/batches/{batch_id} ------------------------------------------------------------------------------


def unnest(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The raw rows of a /ws/batches message, out of their parents' `children`, oldest first."""
    out = []
    for row in rows:
        out.append({k: v for k, v in row.items() if k != "children"})
        out.extend(unnest(row.get("children", [])))
    return sorted(out, key=lambda r: r["id"])


async def add_to_batch(s: Stack, batch_id: str, *job_ids: str) -> None:
    """The membership event the batch routes record after submitting the jobs (services/core/batches.py)."""
    assert s.api.bus is not None
    env = envelope.make(
        laddr_ws.BATCH_EVENT,
        source="test",
        data={
            "batch_id": batch_id,
            "agent_name": "echoer",
            "submitted_by": "laddr",
            "principal": None,
            "tasks": [{"job_id": job_id, "agent_name": "echoer", "inputs": {}} for job_id in job_ids],
        },
    )
    await s.api.bus.publish(f"evt.batch.{batch_id}.tasks_added", env)


async def test_ws_batch_sends_the_raw_trace_rows_of_its_jobs_as_they_join(
    make_config: Any, start_stack: Any, fake: FakeLLM, session: aiohttp.ClientSession
) -> None:
    s = await traced_stack(make_config, start_stack, fake)
    first = await run_agent(s)
    await s.client.wait_job(first)
    await add_to_batch(s, "batch-1", first)
    ws = await connect(session, s, "/ws/batches/batch-1")
    opening = await receive(ws, 10)
    assert opening is not None and opening["type"] == "traces"
    conforms([opening], rows=True)
    rows = await rows_of(s, first)
    sent = unnest(opening["data"]["spans"])
    assert opening["data"]["count"] == len(rows) and len(rows) >= 3
    assert [r["id"] for r in sent] == [r["id"] for r in rows]
    parents = {
        r["id"]: r["parent_id"]
        for r in await s.api.pool.fetch("SELECT id, parent_id FROM traces WHERE job_id = $1", first)
    }
    assert {r["id"]: r["parent_id"] for r in sent} == parents
    # Laddr's batch tree: the run's task_start is the root, its other traces its `children` (raw rows)
    (start,) = opening["data"]["spans"]
    assert start["event_type"] == "task_start" and [c["id"] for c in start["children"]] == [r["id"] for r in rows[1:]]
    for got, row in zip(sent, rows, strict=True):
        assert set(got) >= {"id", "job_id", "agent_name", "event_type", "parent_id", "payload", "timestamp"}
        assert {k: got[k] for k in ("id", "job_id", "agent_name", "event_type", "payload", "timestamp")} == {
            k: row[k] for k in ("id", "job_id", "agent_name", "event_type", "payload", "timestamp")
        }
    # a task added later: its traces (also those made before the membership was recorded) follow
    fake.script("m-echo", fake_llm.delayed(0.6, fake_llm.text("late")))
    second = await run_agent(s)
    await asyncio.sleep(0.2)
    await add_to_batch(s, "batch-1", second)
    await s.client.wait_job(second)
    later = await rows_of(s, second)
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + 15
    while len(got) < len(later) and time.monotonic() < deadline:
        got += [r for m in await quiet_for(ws, 0.5) for r in unnest(m["data"]["spans"])]
    got += [r for m in await quiet_for(ws, 1.0) for r in unnest(m["data"]["spans"])]
    assert sorted(r["id"] for r in got) == [r["id"] for r in later]  # each once, none of the first job again
    assert not ws.closed  # as Laddr: no `complete`, the client closes
    await ws.close()


async def test_ws_batch_of_an_unknown_batch_closes_without_a_message(
    make_config: Any, start_stack: Any, fake: FakeLLM, session: aiohttp.ClientSession
) -> None:
    s = await traced_stack(make_config, start_stack, fake)
    for batch_id in ("no-such-batch", "bad.id"):
        ws = await connect(session, s, f"/ws/batches/{batch_id}")
        assert await until_closed(ws, timeout_s=5) == []
        assert ws.close_code == 1000

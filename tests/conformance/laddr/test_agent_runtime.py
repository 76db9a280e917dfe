"""Laddr agent runtime over real HTTP against the fake LLM: several tool calls of one model message
run as child jobs at once (bounded by `max_parallel_tools`, 1 = one after another; overlap read from
the event log, never from wall-clock thresholds), their tool messages go back in the order of the
calls, failing / unknown / forbidden calls are tool errors; traces with Laddr's payload keys and
order (laddr-conformance.md §4.1-4.2), `parent_id` pointing at the run's `task_start` (and a prompt
agent's `task_start` at the prompt's `delegation`), the same after `headrace rebuild`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from services.api import state as api_state
from services.api import submit
from services.core import agents as agents_mod
from services.core import subjects
from services.projector import rebuild
from services.runner.service import Runner
from tests.support import fake_llm, infra, laddr, readmodels, stack
from tests.support.fake_llm import FakeLLM
from tests.support.stack import TOKENS, Stack

#: a token that may run read commands but not write ones, and start Laddr jobs
READER = ("test-laddr-reader-tok", ["jobs:rw", "plugin:ro"])


def plugins(**extra: Any) -> dict[str, Any]:
    """echo, echo_py, napper (sleeps payload.seconds) with room for four at once, a failing plugin."""
    return laddr.plugins(napper={"parallelism": 4}, stderr_exit1={"retry": {"max_attempts": 1}}, **extra)


async def run_job(s: Stack, agent: str, inputs: dict[str, Any], *, token: str = TOKENS["laddr_rw"][0]) -> str:
    assert s.client is not None
    status, body = await s.client.post("/api/jobs", json={"pipeline_name": agent, "inputs": inputs}, token=token)
    assert status == 200, body
    done = await s.client.wait_job(body["job_id"], timeout_s=40)
    assert done["status"] == "succeeded", done
    return str(body["job_id"])


async def trail(s: Stack, job_id: str) -> list[dict[str, Any]]:
    """The job's traces through GET /api/traces, oldest first (by id, whatever order the route uses)."""
    await laddr.projected(s)
    assert s.client is not None
    status, body = await s.client.get(f"/api/traces?job_id={job_id}&limit=1000")
    assert status == 200, body
    return sorted(body["traces"], key=lambda t: t["id"])


def tool_child(job_id: str, index: int, *, iteration: int = 1, attempt: int = 1) -> str:
    """The id of a tool call's child job: fixed by the call's place, not by when it ran."""
    return agents_mod.child_job_id(f"{job_id}:{attempt}:tool:{iteration}:{index}")


async def lifetimes(s: Stack, children: list[str]) -> list[tuple[int, int]]:
    """(stream seq of job.started, stream seq of job.succeeded) of each child, from the event log."""
    assert s.api.bus is not None
    out = []
    for child in children:
        events = {env.type: seq for seq, env in await s.api.bus.history(subjects.EVENTS, subjects.job_events(child))}
        assert "job.started" in events and "job.succeeded" in events, (child, events)
        out.append((events["job.started"], events["job.succeeded"]))
    return out


def most_at_once(spans: list[tuple[int, int]]) -> int:
    """The largest number of children running at one point of the log."""
    marks = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = peak = 0
    for _, step in marks:
        running += step
        peak = max(peak, running)
    return peak


def tool_messages(fake: FakeLLM, model: str, turn: int) -> list[dict[str, Any]]:
    return [m for m in fake.requests_for(model)[turn]["messages"] if m["role"] == "tool"]


def call_ids(fake: FakeLLM, model: str, turn: int) -> list[str]:
    assistant = [m for m in fake.requests_for(model)[turn]["messages"] if m["role"] == "assistant"][-1]
    return [c["id"] for c in assistant["tool_calls"]]


async def test_tool_calls_of_one_message_run_at_once_and_answer_in_call_order(
    make_config: Any, start_stack: Any, fake: FakeLLM
) -> None:
    s: Stack = await start_stack(
        make_config(plugins=plugins(), agents={"napper": laddr.agent(fake, "m-par", tools=["napper.poll"])})
    )
    # the first call sleeps longest: the calls end in another order than they were made
    fake.script(
        "m-par",
        fake_llm.tool_calls(*[("napper__poll", {"seconds": sec}) for sec in (1.2, 0.8, 0.4)]),
        fake_llm.text("all slept"),
    )
    job_id = await run_job(s, "napper", {"task": "nap three times"})
    spans = await lifetimes(s, [tool_child(job_id, i) for i in range(3)])
    # every child started before any of them finished: they overlapped
    assert max(start for start, _ in spans) < min(end for _, end in spans), spans
    assert most_at_once(spans) == 3

    # one tool message per call, in the order of the calls, whatever order they finished in
    messages = tool_messages(fake, "m-par", 1)
    assert [m["tool_call_id"] for m in messages] == call_ids(fake, "m-par", 1)
    assert [orjson.loads(m["content"]) for m in messages] == [{"slept": 1.2}, {"slept": 0.8}, {"slept": 0.4}]
    kinds = [t["event_type"] for t in await trail(s, job_id)]
    assert kinds.count("tool_call") == kinds.count("tool_result") == 3


async def test_max_parallel_tools_bounds_the_calls_and_1_runs_them_one_after_another(
    make_config: Any, start_stack: Any, fake: FakeLLM
) -> None:
    s: Stack = await start_stack(
        make_config(
            plugins=plugins(),
            agents={
                "pair": laddr.agent(fake, "m-two", tools=["napper.poll"], max_parallel_tools=2),
                "single": laddr.agent(fake, "m-one", tools=["napper.poll"], max_parallel_tools=1),
            },
        )
    )
    for model in ("m-two", "m-one"):
        fake.script(model, fake_llm.tool_calls(*[("napper__poll", {"seconds": 0.6})] * 4), fake_llm.text("done"))

    pair = await run_job(s, "pair", {"task": "four naps"})
    assert most_at_once(await lifetimes(s, [tool_child(pair, i) for i in range(4)])) == 2

    single = await run_job(s, "single", {"task": "four naps"})
    spans = await lifetimes(s, [tool_child(single, i) for i in range(4)])
    # each call starts after the one before it finished, in the order of the calls
    assert all(spans[i][1] < spans[i + 1][0] for i in range(3)), spans
    messages = tool_messages(fake, "m-one", 1)
    assert [m["tool_call_id"] for m in messages] == call_ids(fake, "m-one", 1)


async def test_failing_unknown_and_bad_tool_calls_are_tool_errors_next_to_good_ones(
    make_config: Any, start_stack: Any, fake: FakeLLM
) -> None:
    s: Stack = await start_stack(
        make_config(
            plugins=plugins(), agents={"mixed": laddr.agent(fake, "m-mix", tools=["echo_py.poll", "stderr_exit1.poll"])}
        )
    )
    fake.script(
        "m-mix",
        fake_llm.tool_calls(
            ("echo_py__poll", {"message": "fine"}),
            ("stderr_exit1__poll", {}),
            ("ghost__poll", {}),
            ("echo_py__poll", "{not json"),
        ),
        fake_llm.text("coped"),
    )
    job_id = await run_job(s, "mixed", {"task": "try them all"})
    messages = tool_messages(fake, "m-mix", 1)
    assert [m["tool_call_id"] for m in messages] == call_ids(fake, "m-mix", 1)
    good, failed, unknown, bad = [m["content"] for m in messages]
    assert good == "Echoed: fine"
    assert orjson.loads(failed)["error"].startswith("dead: ") or orjson.loads(failed)["error"].startswith("failed: ")
    assert "unknown tool 'ghost__poll'" in orjson.loads(unknown)["error"]
    assert "arguments are not JSON" in orjson.loads(bad)["error"]
    traces = await trail(s, job_id)
    errors = [t["payload"] for t in traces if t["event_type"] == "tool_error"]
    assert sorted(e["tool"] for e in errors) == ["echo_py.poll", "ghost__poll", "stderr_exit1.poll"]
    for e in errors:
        assert {"tool", "worker", "started_at", "ended_at", "duration_ms", "error"} <= set(e), e
    assert traces[-1]["event_type"] == "task_complete"


async def test_a_forbidden_call_is_a_tool_error_while_an_allowed_one_runs(
    make_config: Any, start_stack: Any, fake: FakeLLM
) -> None:
    tokens = [{"name": k, "token": t, "scopes": sc} for k, (t, sc) in {**TOKENS, "reader": READER}.items()]
    s: Stack = await start_stack(
        make_config(
            plugins=plugins(),
            api={"listen": "127.0.0.1:0", "auth": {"tokens": tokens}},
            agents={"careful": laddr.agent(fake, "m-care", tools=["echo_py.poll", "echo_py.health"])},
        )
    )
    fake.script(
        "m-care",
        fake_llm.tool_calls(("echo_py__poll", {"message": "write"}), ("echo_py__health", {})),
        fake_llm.text("read only"),
    )
    job_id = await run_job(s, "careful", {"task": "both"}, token=READER[0])
    forbidden, health = tool_messages(fake, "m-care", 1)
    assert orjson.loads(forbidden["content"])["code"] == "forbidden"
    assert orjson.loads(health["content"]) == {"healthy": True}
    assert s.api.pool is not None
    await laddr.projected(s)  # the job's answer comes from the event log; its children's rows may lag
    children = await s.api.pool.fetch("SELECT command FROM jobs WHERE parent_job_id = $1", job_id)
    assert [r["command"] for r in children] == ["health"]


async def test_traces_have_laddrs_order_and_payload_keys(make_config: Any, start_stack: Any, fake: FakeLLM) -> None:
    s: Stack = await start_stack(
        make_config(plugins=plugins(), agents={"echo": laddr.agent(fake, "m-echo", tools=["echo_py.poll"])})
    )
    long = "x" * 800
    fake.script(
        "m-echo",
        fake_llm.tool_calls(("echo_py__poll", {"message": long})),
        fake_llm.text("the answer is 5", prompt_tokens=30, completion_tokens=6),
    )
    job_id = await run_job(s, "echo", {"query": "add 2 and 3"})
    traces = await trail(s, job_id)
    assert [t["event_type"] for t in traces] == [
        "task_start",
        "llm_usage",
        "autonomous_think",
        "tool_call",
        "tool_result",
        "llm_usage",
        "autonomous_think",
        "task_complete",
    ]
    start, usage, think, call, result, _, last_think, complete = (t["payload"] for t in traces)
    assert start["inputs"] == {"query": "add 2 and 3", "job_id": job_id}
    assert start["worker"] == "echo" and start["started_at"].endswith("Z")
    assert {
        k: usage[k] for k in ("provider", "model", "prompt_tokens", "completion_tokens", "total_tokens", "worker")
    } == {
        "provider": "openai",
        "model": "m-echo",
        "prompt_tokens": 20,
        "completion_tokens": 8,
        "total_tokens": 28,
        "worker": "echo",
    }
    for i, step in enumerate((think, last_think), start=1):
        assert step["iteration"] == i and step["worker"] == "echo"
        assert step["started_at"] <= step["ended_at"] and isinstance(step["duration_ms"], int)
    assert last_think["response"] == "the answer is 5"
    assert "echo_py__poll" in think["response"]  # the model's tool calls, as it sent them
    assert call["tool"] == "echo_py.poll" and call["params"] == {"message": long}
    assert call["worker"] == "echo" and call["started_at"].endswith("Z")
    assert result["tool"] == "echo_py.poll" and result["status"] == "success" and result["worker"] == "echo"
    assert result["started_at"] == call["started_at"] <= result["ended_at"]
    assert isinstance(result["duration_ms"], int)
    assert result["result_preview"] == ("Echoed: " + long)[:500]
    assert complete["result"] == {"status": "success", "result": "the answer is 5", "iterations": 2}
    assert complete["worker"] == "echo" and complete["ended_at"].endswith("Z")
    # Headrace's own keys stay (a superset)
    assert call["call_id"] and result["child_job_id"] == tool_child(job_id, 0)
    assert complete["usage"] == {"prompt_tokens": 50, "completion_tokens": 14, "total_tokens": 64}


async def test_parent_id_points_at_the_runs_task_start(make_config: Any, start_stack: Any, fake: FakeLLM) -> None:
    s: Stack = await start_stack(
        make_config(
            plugins=plugins(),
            agents={
                "nap": laddr.agent(fake, "m-nap", tools=["napper.poll"]),
                "writer": laddr.agent(fake, "m-w"),
                "editor": laddr.agent(fake, "m-e"),
            },
        )
    )
    fake.script("m-nap", fake_llm.tool_calls(*[("napper__poll", {"seconds": 0.2})] * 2), fake_llm.text("napped"))
    job_id = await run_job(s, "nap", {"task": "nap twice"})
    assert s.api.pool is not None
    await laddr.projected(s)
    rows = [
        dict(r)
        for r in await s.api.pool.fetch(
            "SELECT id, event_type, parent_id FROM traces WHERE job_id = $1 ORDER BY id", job_id
        )
    ]
    root, *rest = rows
    assert root["event_type"] == "task_start" and root["parent_id"] is None
    assert len(rest) == 9 and all(r["parent_id"] == root["id"] for r in rest), rows

    # a prompt's agents: each agent run's task_start points at the prompt's delegation that started it
    status, body = await s.client.post(
        "/api/prompts", json={"mode": "sequential", "agents": ["writer", "editor"], "inputs": {"task": "a line"}}
    )
    assert status == 200, body
    prompt_id = body["prompt_id"]
    assert (await s.client.wait_job(prompt_id, timeout_s=30))["status"] == "succeeded"
    await laddr.projected(s)
    delegations = {
        r["child_job_id"]: r["id"]
        for r in await s.api.pool.fetch(
            "SELECT id, payload->>'child_job_id' AS child_job_id FROM traces "
            "WHERE job_id = $1 AND event_type = 'delegation'",
            prompt_id,
        )
    }
    assert len(delegations) == 2
    first = next(t["payload"] for t in await trail(s, prompt_id) if t["event_type"] == "delegation")
    # Laddr's delegation keys
    assert first["target_agent"] == "writer" and first["payload"] == {"task": "a line"}
    assert first["task_id"] in delegations
    for child, delegation_id in delegations.items():
        starts = await s.api.pool.fetch(
            "SELECT parent_id FROM traces WHERE job_id = $1 AND event_type = 'task_start'", child
        )
        assert [r["parent_id"] for r in starts] == [delegation_id]


async def test_each_attempts_traces_point_at_its_own_task_start(
    make_config: Any, start_stack: Any, fake: FakeLLM
) -> None:
    s: Stack = await start_stack(make_config(plugins=plugins(), agents={"shaky": laddr.agent(fake, "m-shaky")}))
    fake.script("m-shaky", fake_llm.error(503, "busy"), fake_llm.text("second time lucky"))
    job_id = await run_job(s, "shaky", {"task": "retry me"})
    traces = await trail(s, job_id)
    assert [t["event_type"] for t in traces] == [
        "task_start",
        "task_error",
        "task_start",
        "llm_usage",
        "autonomous_think",
        "task_complete",
    ]
    assert s.api.pool is not None
    parents = {
        r["id"]: r["parent_id"]
        for r in await s.api.pool.fetch("SELECT id, parent_id FROM traces WHERE job_id = $1", job_id)
    }
    first, second = traces[0]["id"], traces[2]["id"]
    assert [parents[t["id"]] for t in traces] == [None, first, None, second, second, second]


async def test_parent_ids_survive_rebuild_whatever_the_batch_size(
    make_config: Any, start_stack: Any, fake: FakeLLM, database_url: str
) -> None:
    s: Stack = await start_stack(
        make_config(
            plugins=plugins(),
            agents={
                "nap": laddr.agent(fake, "m-nap", tools=["napper.poll", "echo_py.poll"]),
                "writer": laddr.agent(fake, "m-w"),
            },
        )
    )
    fake.script(
        "m-nap",
        fake_llm.tool_calls(("napper__poll", {"seconds": 0.3}), ("echo_py__poll", {"message": "a"}), ("ghost__x", {})),
        fake_llm.text("done"),
    )
    await run_job(s, "nap", {"task": "go"})
    status, body = await s.client.post("/api/prompts", json={"prompt_name": "writer", "inputs": {"task": "b"}})
    assert status == 200, body
    await s.client.wait_job(body["prompt_id"], timeout_s=30)
    await s.caught_up()
    live = await readmodels.snapshot(database_url)
    linked = [row for row in live["traces"] if orjson.loads(row)["parent_id"] is not None]
    # the run: 10 traces under its task_start; the prompt: its agent's task_start under the delegation, 3 under that
    assert len(linked) == 14, live["traces"]

    assert s.api.bus is not None
    for batch_size in (1, 3, 2000):  # batch boundaries fall between parents and children or not
        await rebuild.rebuild(s.api.bus, database_url, batch_size=batch_size)
        assert await readmodels.snapshot(database_url) == live, batch_size


async def test_a_batch_tasks_trace_id_is_on_every_trace_and_its_keys_in_the_inputs(
    make_config: Any, start_stack: Any, fake: FakeLLM
) -> None:
    """What a batch submit hands the runtime (the work item's context) becomes Laddr's batch trace keys."""
    s: Stack = await start_stack(make_config(plugins=plugins(), agents={"echo": laddr.agent(fake, "m-b")}))
    assert s.api.app is not None
    job_id = await submit.submit_job(
        s.api.app[api_state.STATE],
        plugin="agent",
        command="echo",
        payload={"message": "one"},
        context={"trace_id": "t-123", "batch_id": "b-9", "batch_index": 0},
    )
    assert s.client is not None
    assert (await s.client.wait_job(job_id))["status"] == "succeeded"
    traces = await trail(s, job_id)
    assert [t["event_type"] for t in traces] == ["task_start", "llm_usage", "autonomous_think", "task_complete"]
    assert all(t["payload"]["trace_id"] == "t-123" for t in traces)
    assert traces[0]["payload"]["inputs"] == {
        "message": "one",
        "job_id": job_id,
        "trace_id": "t-123",
        "_batch_id": "b-9",
        "_batch_index": 0,
    }


async def test_an_agent_runner_killed_during_parallel_tool_calls_runs_no_tool_twice(
    make_config: Any, nats_url: str, database_url: str, fake: FakeLLM, tmp_path: Path
) -> None:
    """SIGKILL the agent's runner while its two tool calls run: each tool ran once (its child job
    finished on the other runner), the attempt is recorded as lost, and the retry is a new attempt."""
    service = {
        "name": "headrace-test",
        "log_level": "warning",
        "max_workers": 4,
        "work_lease": "2s",
        "heartbeat_interval": "0.3s",
    }
    config = make_config(
        service=service, plugins=plugins(), agents={"nap": laddr.agent(fake, "m-crash", tools=["napper.poll"])}
    )
    s = Stack(config)
    s.runner = Runner(config, plugins=["napper", "echo", "echo_py"])  # the tools run here, the agent below
    s.services[2] = s.runner
    await s.start()
    assert s.client is not None

    def agent_runner(n: int) -> stack.ServiceProcess:
        return stack.ServiceProcess(
            "runner",
            config_path=config.path,
            nats_url=nats_url,
            database_url=database_url,
            extra_args=["--plugin", "agent"],
            log_path=tmp_path / f"runner{n}.log",
        ).start()

    marker = tmp_path / "naps"
    fake.script(
        "m-crash",
        fake_llm.tool_calls(*[("napper__poll", {"seconds": 2, "marker": str(marker)})] * 2),
        fake_llm.text("done after the crash"),
    )
    runner = agent_runner(1)
    try:

        async def agent_active() -> bool:
            _, body = await s.client.get("/api/agents")  # type: ignore[union-attr]
            return any(a["name"] == "nap" and a["status"] == "active" for a in body["agents"])

        await infra.wait_until(agent_active, timeout_s=30, what="the agent runner to serve")
        status, body = await s.client.post("/api/jobs", json={"pipeline_name": "nap", "inputs": {"task": "nap"}})
        assert status == 200, body
        job_id = body["job_id"]

        async def both_napping() -> bool:
            return marker.exists() and len(marker.read_text().splitlines()) == 2

        await infra.wait_until(both_napping, timeout_s=30, what="both tool calls to run")
        runner.kill()
        runner = agent_runner(2)
        done = await s.client.wait_job(job_id, timeout_s=60)
        assert done["status"] == "succeeded" and done["attempt"] == 2, done

        children = [tool_child(job_id, i) for i in range(2)]
        for child in children:  # the first attempt's tool jobs finish on their own runner
            assert (await s.client.wait_job(child))["status"] == "succeeded"
        assert sorted(line.split()[0] for line in marker.read_text().splitlines()) == sorted(children)
        assert s.api.bus is not None
        for child in children:  # … exactly once
            kinds = [env.type for _, env in await s.api.bus.history(subjects.EVENTS, subjects.job_events(child))]
            assert kinds.count("job.started") == 1 and kinds.count("job.succeeded") == 1, kinds
        await laddr.projected(s)
        assert s.api.pool is not None
        rows = await s.api.pool.fetch(
            "SELECT attempt, status, last_error FROM job_logs WHERE job_id = $1 ORDER BY attempt", job_id
        )
        assert [(r["attempt"], r["status"]) for r in rows] == [(1, "failed"), (2, "succeeded")]
        assert "lost" in rows[0]["last_error"]
        tree = {r["job_id"] for r in await s.api.pool.fetch("SELECT job_id FROM jobs WHERE parent_job_id = $1", job_id)}
        assert tree == set(children)  # the first attempt's tool jobs stay in the job's tree: nothing unseen
    finally:
        runner.kill()
        await s.stop()

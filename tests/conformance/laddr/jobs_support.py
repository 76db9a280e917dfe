"""What the jobs/chat/traces/agents conformance tests share: a stack with Laddr-style agents on the
fake LLM, a run of the scripted tool-call-then-answer agent, and Laddr's status checks (200 for a
success, 422 naming the field in `detail[].loc` for a validation error)."""

from __future__ import annotations

from typing import Any

from tests.support import fake_llm, laddr
from tests.support.fake_llm import FakeLLM
from tests.support.stack import TOKENS, Stack

ANSWER = "the answer is 5"
#: the fake LLM's usage for the scripted run: one tool call (20 + 8), then the answer (30 + 6)
USAGE = {"prompt_tokens": 50, "completion_tokens": 14, "total_tokens": 64}


def agents(fake: FakeLLM) -> dict[str, Any]:
    """`echo` (one tool, echo_py.poll), `plain` (no tools), `slow` (for timeouts)."""
    return {
        "echo": laddr.agent(fake, "m-echo", tools=["echo_py.poll"]),
        "plain": laddr.agent(fake, "m-plain"),
        "slow": laddr.agent(fake, "m-slow"),
    }


def api_section(**laddr_keys: Any) -> dict[str, Any]:
    """The test config's `api` section with an `api.laddr` block."""
    return {
        "listen": "127.0.0.1:0",
        "auth": {"tokens": [{"name": k, "token": t, "scopes": s} for k, (t, s) in TOKENS.items()]},
        "laddr": laddr_keys,
    }


async def start(make_config: Any, start_stack: Any, fake: FakeLLM, **sections: Any) -> Stack:
    stack: Stack = await start_stack(make_config(plugins=laddr.plugins(), agents=agents(fake), **sections))
    return stack


def script_echo(fake: FakeLLM) -> None:
    """The next `echo` run calls its tool once and then answers ANSWER."""
    fake.script(
        "m-echo",
        fake_llm.tool_calls(("echo_py__poll", {"message": "2+3"}), prompt_tokens=20, completion_tokens=8),
        fake_llm.text(ANSWER, prompt_tokens=30, completion_tokens=6),
    )


async def run_echo(s: Stack, fake: FakeLLM, inputs: dict[str, Any] | None = None) -> str:
    """Submit the scripted `echo` run through POST /api/jobs and wait until it and its traces are in."""
    script_echo(fake)
    status, body = await s.client.post("/api/jobs", json={"pipeline_name": "echo", "inputs": inputs or {"q": "2+3"}})
    assert ok(status), body
    await s.client.wait_job(body["job_id"])
    await laddr.projected(s)
    return str(body["job_id"])


def ok(status: int) -> bool:
    """A success on Laddr's paths: 200 (work Headrace queues is 202 on Ductile's routes only)."""
    return status == 200


def names(body: Any) -> set[str]:
    """The fields or parameters an error body names, in our shape (`field`/`parameter`) or FastAPI's
    (`detail[].loc`)."""
    found: set[str] = set()
    if isinstance(body, dict):
        for key in ("field", "parameter"):
            if isinstance(body.get(key), str):
                found.add(body[key])
        detail = body.get("detail")
        if isinstance(detail, list):
            for item in detail:
                found.update(str(part) for part in (item.get("loc") or [])[1:] if isinstance(item, dict))
    return found


def invalid(status: int, body: Any, name: str) -> bool:
    """A validation error naming `name`: Laddr's (FastAPI's) 422."""
    return status == 422 and name in names(body)

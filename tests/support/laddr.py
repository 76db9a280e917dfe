"""Helpers for the Laddr-dialect tests: config sections for agents that talk to the fake LLM,
waiting for the projection, and reading traces."""

from __future__ import annotations

import re
from typing import Any

import orjson

from services.api import laddr_system
from services.core import subjects
from tests.support.fake_llm import FakeLLM
from tests.support.stack import Stack

FAST_RETRY = {"max_attempts": 2, "backoff_base": "0.1s"}


def agent(
    fake: FakeLLM | None, model: str, *, tools: list[str] | None = None, llm_timeout: str = "5s", **extra: Any
) -> dict[str, Any]:
    """An `agents.<name>` section whose LLM is the fake server (or the offline echo provider); `llm_timeout`
    bounds each request to it (longer for a test that holds a reply while it acts: fake_llm.held)."""
    llm = (
        {"provider": "echo"}
        if fake is None
        else {"base_url": fake.url, "model": model, "api_key": "sk-fake", "timeout": llm_timeout}
    )
    return {
        "role": f"{model} role",
        "goal": f"{model} goal",
        "instructions": "Be brief.",
        "llm": llm,
        "tools": tools or [],
        "max_iterations": 4,
        **extra,
    }


def plugins(**extra: Any) -> dict[str, Any]:
    """echo, echo_py, and fast retries for agent runs and prompts."""
    return {"echo": {}, "echo_py": {}, "agent": {"retry": FAST_RETRY}, "prompt": {"retry": FAST_RETRY}, **extra}


async def projected(s: Stack) -> None:
    """Wait until every event stored so far is in the read models."""
    assert s.api.bus is not None
    await s.projector.wait_for(await s.api.bus.stream_last_seq(subjects.EVENTS), timeout_s=20)


async def traces(s: Stack, job_id: str) -> list[dict[str, Any]]:
    """The job's traces, oldest first, through GET /api/traces."""
    await projected(s)
    assert s.client is not None
    status, body = await s.client.get(f"/api/traces?job_id={job_id}&limit=1000")
    assert status == 200, body
    return sorted(body["traces"], key=lambda t: t["id"])


#: Laddr's container-log routes, which answer 503 by design (Headrace has no containers to read)
_CONTAINER_LOGS = re.compile(r"^/api/logs/containers(/[^/?]*)?(\?|$)")


def designed_unavailable(path: str, status: int, body: Any) -> bool:
    """Whether a 5xx is the container-log routes' designed 503 (`detail` saying why), not a failure."""
    if status != 503 or not _CONTAINER_LOGS.match(path):
        return False
    if isinstance(body, bytes | str):
        try:
            body = orjson.loads(body)
        except orjson.JSONDecodeError:
            return False
    return isinstance(body, dict) and body.get("detail") == laddr_system.NO_CONTAINERS

"""The fake OpenAI-compatible server both sides of the side-by-side harness talk to: the tests'
`FakeLLM` with a stateless script, so the order in which the two sides call it does not matter.

Every run is "one tool call, then finish", with token usage 20+8 then 30+6, in each side's own
dialect of the same conversation:

- Headrace sends OpenAI `tools` and replays tool results as `role: tool` messages: the first
  call gets a native tool call of the first offered tool, the next a text answer;
- Laddr sends one user prompt and parses a JSON action out of the text: the first call gets
  `{"type":"tool","tool":"poll",...}`, and once the prompt carries a `HISTORY:` with a result,
  `{"type":"finish","answer":...}`.

A conversation whose instructions say SLOW is answered after `SLOW_S` seconds (chat timeouts).
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from aiohttp import web

from tests.support import fake_llm
from tests.support.fake_llm import FakeLLM

ANSWER = "the answer is 5"
SLOW_S = 3.0


def _reply(body: dict[str, Any]) -> fake_llm.Reply:
    messages = body.get("messages") or []
    text = "\n".join(str(m.get("content") or "") for m in messages)
    tools = body.get("tools") or []
    if tools:  # Headrace: native tool calls
        if any(m.get("role") == "tool" for m in messages):
            reply = fake_llm.text(ANSWER, prompt_tokens=30, completion_tokens=6)
        else:
            name = tools[0]["function"]["name"]
            reply = fake_llm.tool_calls((name, {"message": "2+3"}), prompt_tokens=20, completion_tokens=8)
    elif "HISTORY:" in text and "RESULT:" in text:  # Laddr: the tool has answered
        reply = fake_llm.text(json.dumps({"type": "finish", "answer": ANSWER}), prompt_tokens=30, completion_tokens=6)
    elif "TASK:" in text:  # Laddr: first decision
        reply = fake_llm.text(
            json.dumps({"type": "tool", "tool": "poll", "params": {"message": "2+3"}}),
            prompt_tokens=20,
            completion_tokens=8,
        )
    else:
        reply = fake_llm.text(ANSWER, prompt_tokens=10, completion_tokens=5)
    return fake_llm.delayed(SLOW_S, reply) if "SLOW" in text else reply


class ScriptedLLM(FakeLLM):
    """FakeLLM whose next reply is computed from the request instead of taken from a queue."""

    async def _complete(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())  # aiohttp caches the body: the parent reads it again
        model = body.get("model", "")
        self.scripts[model] = [_reply(body)]
        return await super()._complete(request)

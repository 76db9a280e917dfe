"""A small OpenAI-compatible chat-completions server for tests: an aiohttp app on a free port of
127.0.0.1 answering `POST /v1/chat/completions` with scripted completions (text or tool calls,
with usage), HTTP errors, delays or replies held until the test releases them, per model. Every
request body is recorded, so tests can check what the agent loop sent (messages, tools, the
Authorization header) over real HTTP.

A model with no script left answers `"<model>: <last user message>"` with usage 7 + 3.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import orjson
from aiohttp import web

Reply = dict[str, Any]


def text(content: str, *, prompt_tokens: int = 10, completion_tokens: int = 5) -> Reply:
    return {"content": content, "usage": (prompt_tokens, completion_tokens)}


def tool_calls(*calls: tuple[str, dict[str, Any] | str], prompt_tokens: int = 20, completion_tokens: int = 8) -> Reply:
    """Tool calls; arguments given as a str are sent as that JSON text."""
    return {"tool_calls": list(calls), "usage": (prompt_tokens, completion_tokens)}


def error(status: int, message: str = "scripted failure") -> Reply:
    return {"status": status, "message": message}


def delayed(seconds: float, reply: Reply) -> Reply:
    return {**reply, "delay": seconds}


def held(gate: asyncio.Event, reply: Reply) -> Reply:
    """`reply`, sent once the test sets `gate` (a run that must still be going while the test acts:
    no delay to outlast). FakeLLM.stop sets every gate, so no request is left hanging."""
    return {**reply, "gate": gate}


class FakeLLM:
    def __init__(self) -> None:
        self.scripts: dict[str, list[Reply]] = {}
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.gates: list[asyncio.Event] = []
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """The base_url an agent's llm section takes."""
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, model: str, *replies: Reply) -> None:
        self.scripts.setdefault(model, []).extend(replies)
        self.gates.extend(r["gate"] for r in replies if r.get("gate") is not None)

    def requests_for(self, model: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r.get("model") == model]

    async def start(self) -> FakeLLM:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._complete)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        for gate in self.gates:
            gate.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _complete(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        model = body.get("model", "")
        queue = self.scripts.get(model) or []
        if queue:
            reply = queue.pop(0)
        else:
            last = next((m.get("content") for m in reversed(body.get("messages") or []) if m.get("role") == "user"), "")
            reply = text(f"{model}: {last}", prompt_tokens=7, completion_tokens=3)
        if reply.get("gate") is not None:
            await reply["gate"].wait()
        if reply.get("delay"):
            await asyncio.sleep(reply["delay"])
        if "status" in reply:
            return web.json_response({"error": {"message": reply["message"], "type": "fake"}}, status=reply["status"])
        prompt, completion = reply["usage"]
        message: dict[str, Any] = {"role": "assistant", "content": reply.get("content")}
        if reply.get("tool_calls"):
            message["tool_calls"] = [
                {
                    "id": f"call_{next(self._ids)}",
                    "type": "function",
                    "function": {
                        "name": name,
                        "arguments": args if isinstance(args, str) else orjson.dumps(args).decode(),
                    },
                }
                for name, args in reply["tool_calls"]
            ]
        return web.json_response(
            {
                "id": f"chatcmpl-{next(self._ids)}",
                "object": "chat.completion",
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": "tool_calls" if reply.get("tool_calls") else "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                },
            }
        )

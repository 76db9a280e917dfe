"""LLM client of the agent loop: messages and tool schemas in, one `Completion` (text or tool calls,
plus token usage) out, or an `LlmError` that says whether a retry can help.

Wire format: OpenAI-compatible chat completions over HTTP (OpenAI, Ollama, vLLM, LM Studio,
llama.cpp server): `POST {base_url}/chat/completions` with `Authorization: Bearer <api_key>` when
a key is set, native tool calling (`tools: [{type: function, function: {...}}]`, answers in
`choices[0].message.tool_calls`), usage in `usage.{prompt,completion,total}_tokens`.

`provider: echo` is the offline provider: no network, it answers with a deterministic echo of the
last user message (marked "[offline echo]") and a word count as token usage.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
import orjson

from services.core import agents, errors, values

JSONDict = dict[str, Any]
ECHO_MARK = "[offline echo]"
#: HTTP answers worth another attempt: the provider is busy, rate limiting or failing itself
RETRYABLE_STATUS = frozenset({408, 409, 425, 429})


class LlmError(errors.HeadraceError):
    """The LLM call failed."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def to_dict(self) -> JSONDict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ToolCall:
    id: str
    #: the function name the model called ("<plugin>__<command>")
    name: str
    #: the arguments as the JSON text the model wrote
    arguments: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Completion:
    content: str | None
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = Usage()
    model: str = ""
    finish_reason: str | None = None

    def assistant_message(self) -> JSONDict:
        """The message to append to the conversation before the tool results."""
        message: JSONDict = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [
                {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
                for call in self.tool_calls
            ]
        return message


def tool_schema(name: str, description: str | None, input_schema: Mapping[str, Any] | None) -> JSONDict:
    """One entry of the request's `tools`."""
    parameters = dict(input_schema) if input_schema else {"type": "object", "properties": {}}
    return {
        "type": "function",
        "function": {"name": name, "description": description or name, "parameters": parameters},
    }


def request_body(settings: agents.LlmSettings, messages: Sequence[JSONDict], tools: Sequence[JSONDict]) -> JSONDict:
    body: JSONDict = {"model": settings.model, "messages": list(messages)}
    if tools:
        body["tools"] = list(tools)
        body["tool_choice"] = "auto"
    if settings.temperature is not None:
        body["temperature"] = settings.temperature
    if settings.max_tokens is not None:
        body["max_tokens"] = settings.max_tokens
    return body


def _int(value: Any) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


def parse_response(body: Any, *, model: str) -> Completion:
    """`choices[0].message` and `usage` of a chat-completions answer; LlmError when it is not one."""
    try:
        choice = body["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError):
        raise LlmError("the LLM answered without choices[0].message", retryable=True) from None
    problem = values.problem(message)
    if problem is not None:
        raise LlmError(f"the LLM's answer is not accepted: {problem}", retryable=False)
    calls: list[ToolCall] = []
    for i, raw in enumerate(message.get("tool_calls") or []):
        function = raw.get("function") or {}
        arguments = function.get("arguments")
        if not isinstance(arguments, str):  # some servers send the object itself
            arguments = orjson.dumps(arguments or {}).decode()
        calls.append(
            ToolCall(id=str(raw.get("id") or f"call_{i}"), name=str(function.get("name") or ""), arguments=arguments)
        )
    usage = body.get("usage") or {}
    prompt, completion = _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))
    content = message.get("content")
    return Completion(
        content=content if isinstance(content, str) else None,
        tool_calls=tuple(calls),
        usage=Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=_int(usage.get("total_tokens")) or prompt + completion,
        ),
        model=str(body.get("model") or model),
        finish_reason=choice.get("finish_reason"),
    )


def _error_detail(raw: bytes) -> str:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:200].decode("utf-8", "replace").strip()
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error or body)[:200]


async def complete(
    session: aiohttp.ClientSession,
    settings: agents.LlmSettings,
    messages: Sequence[JSONDict],
    tools: Sequence[JSONDict],
) -> Completion:
    """One chat completion."""
    if settings.offline:
        return echo(messages)
    url = f"{settings.base_url}/chat/completions"
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if settings.api_key:
        headers["Authorization"] = f"Bearer {settings.api_key}"
    body = orjson.dumps(request_body(settings, messages, tools))
    try:
        async with session.post(
            url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=settings.timeout_s)
        ) as resp:
            raw = await resp.read()
            status = resp.status
    except TimeoutError:
        raise LlmError(
            f"LLM generation failed: {url} did not answer within {settings.timeout_s:g}s", retryable=True
        ) from None
    except aiohttp.ClientConnectorError as exc:
        raise LlmError(
            f"LLM generation failed: LLM unreachable at {url} ({str(exc.os_error) or exc})", retryable=True
        ) from exc
    except aiohttp.ClientError as exc:
        raise LlmError(
            f"LLM generation failed: request to {url} failed: {str(exc) or type(exc).__name__}", retryable=True
        ) from exc
    if status >= 400:
        raise LlmError(
            f"LLM generation failed: {url} answered HTTP {status}: {_error_detail(raw)}",
            retryable=status >= 500 or status in RETRYABLE_STATUS,
            status=status,
        )
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise LlmError(
            f"LLM generation failed: {url} answered with something that is not JSON", retryable=True
        ) from None
    return parse_response(parsed, model=settings.model)


def _words(text: Any) -> int:
    return len(text.split()) if isinstance(text, str) else 0


def echo(messages: Sequence[JSONDict]) -> Completion:
    """The offline provider's answer: the last user message, echoed."""
    last = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), "")
    reply = f"{ECHO_MARK} {last}".rstrip()
    prompt = sum(_words(m.get("content")) for m in messages)
    completion = _words(reply)
    return Completion(
        content=reply,
        usage=Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion),
        model=agents.ECHO,
        finish_reason="stop",
    )

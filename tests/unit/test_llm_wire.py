"""The LLM client's wire format (OpenAI-compatible chat completions) against a real local HTTP
server, the offline echo provider, error classification, and the agents config section."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest

from services.core import agents, errors, resources
from services.core import config as config_mod
from services.runner import llm
from tests.support import fake_llm


@pytest.fixture
async def server() -> AsyncIterator[fake_llm.FakeLLM]:
    fake = await fake_llm.FakeLLM().start()
    yield fake
    await fake.stop()


def settings(url: str, **extra: object) -> agents.LlmSettings:
    return agents.LlmSettings(provider="openai", base_url=url, model="m1", api_key="sk-test", timeout_s=5, **extra)


SCHEMA = {"type": "object", "properties": {"message": {"type": "string"}}}


async def test_request_carries_messages_tools_and_bearer_key(server: fake_llm.FakeLLM) -> None:
    server.script("m1", fake_llm.tool_calls(("echo__poll", {"message": "hi"}), prompt_tokens=11, completion_tokens=4))
    tools = [llm.tool_schema("echo__poll", "Emits echo.poll events", SCHEMA)]
    messages = [{"role": "system", "content": "You are a."}, {"role": "user", "content": "say hi"}]
    async with aiohttp.ClientSession() as session:
        completion = await llm.complete(session, settings(server.url, temperature=0.2, max_tokens=50), messages, tools)
    sent = server.requests[0]
    assert sent["model"] == "m1" and sent["messages"] == messages and sent["tool_choice"] == "auto"
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {"name": "echo__poll", "description": "Emits echo.poll events", "parameters": SCHEMA},
        }
    ]
    assert sent["temperature"] == 0.2 and sent["max_tokens"] == 50
    assert server.headers[0]["Authorization"] == "Bearer sk-test"
    assert completion.content is None and len(completion.tool_calls) == 1
    call = completion.tool_calls[0]
    assert call.name == "echo__poll" and call.arguments == '{"message":"hi"}' and call.id.startswith("call_")
    assert completion.usage == llm.Usage(prompt_tokens=11, completion_tokens=4, total_tokens=15)
    assert completion.assistant_message() == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": call.id, "type": "function", "function": {"name": "echo__poll", "arguments": '{"message":"hi"}'}}
        ],
    }


async def test_no_tools_and_no_key_send_neither(server: fake_llm.FakeLLM) -> None:
    plain = agents.LlmSettings(base_url=server.url, model="m2", timeout_s=5)
    async with aiohttp.ClientSession() as session:
        completion = await llm.complete(session, plain, [{"role": "user", "content": "ping"}], [])
    assert "tools" not in server.requests[0] and "Authorization" not in server.headers[0]
    assert completion.content == "m2: ping" and completion.usage.total_tokens == 10 and completion.model == "m2"


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (503, True), (429, True), (400, False), (401, False)])
async def test_http_errors_say_whether_a_retry_can_help(server: fake_llm.FakeLLM, status: int, retryable: bool) -> None:
    server.script("m1", fake_llm.error(status, "model overloaded"))
    async with aiohttp.ClientSession() as session:
        with pytest.raises(llm.LlmError) as caught:
            await llm.complete(session, settings(server.url), [{"role": "user", "content": "x"}], [])
    assert caught.value.retryable is retryable and caught.value.status == status
    assert f"HTTP {status}" in caught.value.message and "model overloaded" in caught.value.message


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_llm_is_a_clear_retryable_error() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    async with aiohttp.ClientSession() as session:
        with pytest.raises(llm.LlmError) as caught:
            await llm.complete(session, settings(url), [{"role": "user", "content": "x"}], [])
    assert caught.value.retryable and "unreachable" in caught.value.message and url in caught.value.message


async def test_a_slow_llm_times_out(server: fake_llm.FakeLLM) -> None:
    server.script("m1", fake_llm.delayed(2, fake_llm.text("late")))
    quick = agents.LlmSettings(base_url=server.url, model="m1", timeout_s=0.3)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(llm.LlmError) as caught:
            await llm.complete(session, quick, [{"role": "user", "content": "x"}], [])
    assert caught.value.retryable and "did not answer within 0.3s" in caught.value.message


def test_parse_accepts_object_arguments_and_missing_usage() -> None:
    body = {
        "choices": [
            {
                "message": {
                    "content": None,
                    "tool_calls": [{"id": "a", "function": {"name": "t__c", "arguments": {"k": 1}}}],
                }
            }
        ]
    }
    completion = llm.parse_response(body, model="m")
    assert completion.tool_calls[0].arguments == '{"k":1}' and completion.usage.total_tokens == 0
    with pytest.raises(llm.LlmError):
        llm.parse_response({"nope": 1}, model="m")


async def test_echo_provider_needs_no_network() -> None:
    offline = agents.LlmSettings(provider="echo", model="echo")
    async with aiohttp.ClientSession() as session:
        completion = await llm.complete(
            session,
            offline,
            [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}],
            [],
        )
    assert completion.content == "[offline echo] hello there" and not completion.tool_calls
    assert completion.usage == llm.Usage(prompt_tokens=4, completion_tokens=4, total_tokens=8)


def test_agents_section_is_validated_at_load() -> None:
    base = {"plugin_roots": []}
    good = config_mod.from_dict(
        {
            **base,
            "agents": {
                "writer": {
                    "role": "Writer",
                    "llm": {"base_url": "http://h/v1/", "model": "m", "timeout": "5s"},
                    "tools": ["echo.poll"],
                    "max_iterations": 3,
                    "tool_cache_ttl": "1m",
                }
            },
        },
        env={},
    )
    spec = agents.specs(good)["writer"]
    assert spec.llm.base_url == "http://h/v1" and spec.llm.timeout_s == 5 and spec.tool_cache_ttl_s == 60
    assert spec.tool_names() == {"echo__poll": "echo.poll"} and spec.max_iterations == 3
    offline = config_mod.from_dict({**base, "agents": {"demo": {"llm": {"provider": "echo"}}}}, env={})
    assert agents.specs(offline)["demo"].llm.offline
    for bad, needle in [
        ({"w": {"llm": {"model": "m"}}}, "base_url is required"),
        ({"w": {"llm": {"provider": "echo"}, "tools": ["nodot"]}}, "tools"),
        ({"w": {"llm": {"provider": "echo"}, "max_iterations": 0}}, "max_iterations"),
        ({"w": {"llm": {"provider": "echo"}, "tools": [3]}}, "tools"),
        ({"w.x": {"llm": {"provider": "echo"}}}, "agents"),
        ({"w": {"role": "no llm"}}, "llm"),
    ]:
        with pytest.raises(errors.ConfigError, match=needle):
            config_mod.from_dict({**base, "agents": bad}, env={})


def test_the_example_config_ships_an_offline_agent() -> None:
    example = config_mod.load(resources.bundled("config.example.yaml"), env={"HEADRACE_ADMIN_TOKEN": "x" * 16})
    demo = agents.specs(example)["demo"]
    assert demo.llm.offline and demo.tools == ("echo_py.poll", "echo_py.health")
    assert example.plugin("agent").retry.max_attempts == 3


def test_offload_section_is_validated() -> None:
    loaded = config_mod.from_dict(
        {"plugin_roots": [], "offload": {"threshold_bytes": 0, "bucket": "big-results"}}, env={}
    )
    assert loaded.offload_threshold_bytes == 0 and loaded.offload_bucket == "big-results"
    for bad in ({"bucket": "a.b"}, {"threshold_bytes": -1}, {"bucket": ""}):
        with pytest.raises(errors.ConfigError, match="offload"):
            config_mod.from_dict({"plugin_roots": [], "offload": bad}, env={})

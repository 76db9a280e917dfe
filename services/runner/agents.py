"""The agent loop: one attempt of one agent run (work item `work.agent.<name>`) in, a
`protocol.Outcome` out, with `evt.trace.*` events along the way.

    system (role, goal, instructions) + user (the job's inputs)
    → LLM → tool calls? → each tool call is a child job (tools.Toolbox), up to the agent's
      `max_parallel_tools` at once → tool messages in the order of the calls → LLM → …
    → a final answer (succeeded) | max_iterations reached (failed, permanent)
    | the LLM unreachable / failing (failed, retryable as the provider's error says)

Traces in Laddr's order: task_start, then per iteration llm_usage, autonomous_think, and the tool
calls' tool_call/tool_result|tool_error (interleaved when they run at once), finally task_complete
(or task_error). `builtin.Runtime.execute` calls `run_agent` and owns the deadline and cancellation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import aiohttp
import orjson

from services.core import agents as agents_mod
from services.core import logging, metrics
from services.runner import builtin, cancel_watch, llm, protocol, tools, traces

log = logging.get("runner.agents")

JSONDict = dict[str, Any]


def system_message(spec: agents_mod.AgentSpec) -> str:
    parts = [f"You are {spec.name}" + (f", {spec.role}." if spec.role else ".")]
    if spec.goal:
        parts.append(f"Your goal: {spec.goal}")
    if spec.instructions:
        parts.append(spec.instructions)
    return "\n".join(parts)


def user_message(inputs: JSONDict) -> str:
    """The job's inputs as the user's message: a lone text field as it is, anything else as JSON."""
    if len(inputs) == 1:
        (value,) = inputs.values()
        if isinstance(value, str):
            return value
    return orjson.dumps(inputs).decode()


def add_usage(total: llm.Usage, more: llm.Usage) -> llm.Usage:
    return llm.Usage(
        prompt_tokens=total.prompt_tokens + more.prompt_tokens,
        completion_tokens=total.completion_tokens + more.completion_tokens,
        total_tokens=total.total_tokens + more.total_tokens,
    )


def think_response(completion: llm.Completion) -> str:
    """Laddr's `autonomous_think.response` (the raw LLM text): the content, or the tool calls as JSON."""
    if not completion.tool_calls:
        return completion.content or ""
    calls = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in completion.tool_calls]
    return orjson.dumps({"content": completion.content, "tool_calls": calls}).decode()


async def run_tools(toolbox: tools.Toolbox, calls: Sequence[llm.ToolCall], *, iteration: int, limit: int) -> list[str]:
    """The tool messages' texts of one model message's calls, in the order of the calls.

    At most `limit` calls run at once, each a child job whose id is fixed by its place in the
    message, not by timing. A call that fails is a tool message (Toolbox.call); only a bus outage
    (TransientError) ends the attempt: the other calls are cancelled and it is raised as itself."""
    gate = asyncio.Semaphore(max(1, limit))

    async def one(index: int, call: llm.ToolCall) -> str:
        async with gate:
            return await toolbox.call(call, iteration=iteration, index=index)

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(index, call)) for index, call in enumerate(calls)]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


async def run_agent(run: builtin.Run, spec: agents_mod.AgentSpec) -> protocol.Outcome:
    item, tracer = run.item, run.tracer
    bound = log.bind(job_id=item.job_id, plugin=item.plugin, command=item.command, attempt=item.attempt)
    toolbox = tools.Toolbox(run, spec)
    schemas = toolbox.schemas()
    messages: list[JSONDict] = [
        {"role": "system", "content": system_message(spec)},
        {"role": "user", "content": user_message(item.payload)},
    ]
    await tracer.emit(
        "task_start",
        {
            "inputs": traces.preview(traces.task_inputs(item)),
            "worker": spec.name,
            "started_at": traces.now(),
            "provider": spec.llm.provider,
            "model": spec.llm.model,
            "offline": spec.llm.offline,
            "tools": list(spec.tools),
        },
    )
    usage = llm.Usage()
    async with aiohttp.ClientSession() as session:
        for iteration in range(1, spec.max_iterations + 1):
            if (cancelled := await cancel_watch.stopped(run, iteration=iteration)) is not None:
                return cancelled
            think = traces.Span()
            try:
                completion = await llm.complete(session, spec.llm, messages, schemas)
            except llm.LlmError as exc:
                bound.warning("llm_failed", error=exc.message, retryable=exc.retryable, iteration=iteration)
                await tracer.emit(
                    "task_error",
                    {
                        "error": exc.message,
                        "worker": spec.name,
                        "iteration": iteration,
                        "retryable": exc.retryable,
                        "status": exc.status,
                        "ended_at": traces.now(),
                    },
                )
                return protocol.Outcome(
                    status="failed", error=exc.message, retry=exc.retryable, duration_ms=run.elapsed_ms
                )
            usage = add_usage(usage, completion.usage)
            metrics.llm_used(
                spec.name, spec.llm.model, completion.usage.prompt_tokens, completion.usage.completion_tokens
            )
            await tracer.emit(
                "llm_usage",
                {
                    "provider": spec.llm.provider,
                    "model": completion.model or spec.llm.model,
                    **completion.usage.to_dict(),
                    "worker": spec.name,
                    "iteration": iteration,
                },
            )
            await tracer.emit(
                "autonomous_think",
                {
                    "iteration": iteration,
                    "worker": spec.name,
                    **think.end(),
                    "response": traces.preview(think_response(completion)),
                    "tool_calls": len(completion.tool_calls),
                },
            )
            if not completion.tool_calls:
                return await finish(run, spec, completion.content or "", iteration=iteration, usage=usage)
            messages.append(completion.assistant_message())
            contents = await run_tools(
                toolbox, completion.tool_calls, iteration=iteration, limit=spec.max_parallel_tools
            )
            messages += [
                {"role": "tool", "tool_call_id": call.id, "content": content}
                for call, content in zip(completion.tool_calls, contents, strict=True)
            ]
    error = f"agent {spec.name!r} reached max_iterations ({spec.max_iterations}) without a final answer"
    await tracer.emit(
        "task_error",
        {
            "error": error,
            "worker": spec.name,
            "iteration": spec.max_iterations,
            "retryable": False,
            "ended_at": traces.now(),
        },
    )
    return protocol.Outcome(status="failed", error=error, retry=False, duration_ms=run.elapsed_ms)


async def finish(
    run: builtin.Run, spec: agents_mod.AgentSpec, output: str, *, iteration: int, usage: llm.Usage
) -> protocol.Outcome:
    """The final answer: Laddr's `task_complete` (`result` = the loop's `{status, result, iterations}`)."""
    await run.tracer.emit(
        "task_complete",
        {
            "result": {"status": "success", "result": traces.preview(output), "iterations": iteration},
            "worker": spec.name,
            "ended_at": traces.now(),
            "iterations": iteration,
            "usage": usage.to_dict(),
            "duration_ms": run.elapsed_ms,
        },
    )
    result: JSONDict = {"result": output, "agent": spec.name, "iterations": iteration, "usage": usage.to_dict()}
    if spec.llm.offline:
        result["offline"] = True
    return protocol.Outcome(status="succeeded", response={"status": "ok", "result": result}, duration_ms=run.elapsed_ms)

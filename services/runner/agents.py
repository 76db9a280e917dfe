"""The agent loop: one attempt of one agent run (work item `work.agent.<name>`) in, a
`protocol.Outcome` out, with `evt.trace.*` events along the way.

    system (role, goal, instructions) + user (the job's inputs)
    → LLM → tool calls? → each tool call is a child job (tools.Toolbox) → tool messages → LLM → …
    → a final answer (succeeded) | max_iterations reached (failed, permanent)
    | the LLM unreachable / failing (failed, retryable as the provider's error says)

`builtin.Runtime.execute` calls `run_agent` and owns the deadline and cancellation.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from services.core import agents as agents_mod
from services.core import logging
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
    return llm.Usage(prompt_tokens=total.prompt_tokens + more.prompt_tokens,
                     completion_tokens=total.completion_tokens + more.completion_tokens,
                     total_tokens=total.total_tokens + more.total_tokens)


async def run_agent(run: builtin.Run, spec: agents_mod.AgentSpec) -> protocol.Outcome:
    item, tracer = run.item, run.tracer
    bound = log.bind(job_id=item.job_id, plugin=item.plugin, command=item.command, attempt=item.attempt)
    toolbox = tools.Toolbox(run, spec)
    schemas = toolbox.schemas()
    messages: list[JSONDict] = [{"role": "system", "content": system_message(spec)},
                                {"role": "user", "content": user_message(item.payload)}]
    await tracer.emit("task_start", {
        "worker": spec.name, "inputs": traces.preview(item.payload), "provider": spec.llm.provider,
        "model": spec.llm.model, "offline": spec.llm.offline, "tools": list(spec.tools), "started_at": traces.now(),
    })
    usage = llm.Usage()
    async with aiohttp.ClientSession() as session:
        for iteration in range(1, spec.max_iterations + 1):
            if (cancelled := await cancel_watch.stopped(run, iteration=iteration)) is not None:
                return cancelled
            try:
                completion = await llm.complete(session, spec.llm, messages, schemas)
            except llm.LlmError as exc:
                bound.warning("llm_failed", error=exc.message, retryable=exc.retryable, iteration=iteration)
                await tracer.emit("task_error", {"error": exc.message, "worker": spec.name, "iteration": iteration,
                                                 "retryable": exc.retryable, "status": exc.status,
                                                 "ended_at": traces.now()})
                return protocol.Outcome(status="failed", error=exc.message, retry=exc.retryable,
                                        duration_ms=run.elapsed_ms)
            usage = add_usage(usage, completion.usage)
            await tracer.emit("llm_usage", {"provider": spec.llm.provider, "model": completion.model or spec.llm.model,
                                            "iteration": iteration, **completion.usage.to_dict()})
            if not completion.tool_calls:
                output = completion.content or ""
                await tracer.emit("task_complete", {"worker": spec.name, "result": traces.preview(output),
                                                    "iterations": iteration, "usage": usage.to_dict(),
                                                    "ended_at": traces.now()})
                result: JSONDict = {"result": output, "agent": spec.name, "iterations": iteration,
                                    "usage": usage.to_dict()}
                if spec.llm.offline:
                    result["offline"] = True
                return protocol.Outcome(status="succeeded", response={"status": "ok", "result": result},
                                        duration_ms=run.elapsed_ms)
            messages.append(completion.assistant_message())
            for index, call in enumerate(completion.tool_calls):
                content = await toolbox.call(call, iteration=iteration, index=index)
                messages.append({"role": "tool", "tool_call_id": call.id, "content": content})
    error = f"agent {spec.name!r} reached max_iterations ({spec.max_iterations}) without a final answer"
    await tracer.emit("task_error", {"error": error, "worker": spec.name, "iteration": spec.max_iterations,
                                     "retryable": False, "ended_at": traces.now()})
    return protocol.Outcome(status="failed", error=error, retry=False, duration_ms=run.elapsed_ms)

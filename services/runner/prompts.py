"""Prompt executions (`POST /api/prompts`): one attempt of a `prompt` job in, a `protocol.Outcome` out.

A prompt runs its agents one after the other, each as a child agent job (so each gets its own
retries, traces and tree node): the prompt's inputs go to the first agent, each agent's output
becomes the next one's input (`{"input": <output>}`), the last output is the prompt's result.
The first agent whose job does not succeed (after its own retries) stops the chain: the prompt
fails permanently, naming the agent and the step. Child ids depend on the step only, so a retried
prompt attempt picks up the children that already ran instead of running them again.
"""

from __future__ import annotations

from typing import Any

from services.core import agents as agents_mod
from services.runner import builtin, cancel_watch, protocol, traces

JSONDict = dict[str, Any]


def output_text(result: Any) -> Any:
    """An agent job's answer: `{"result": <text>, ...}` → the text."""
    return result.get("result") if isinstance(result, dict) and "result" in result else result


async def run_prompt(run: builtin.Run) -> protocol.Outcome:
    item, tracer = run.item, run.tracer
    chain = [str(name) for name in item.payload.get("agents") or []]
    prompt_name = str(item.payload.get("prompt_name") or chain[0])
    current: JSONDict = dict(item.payload.get("inputs") or {})
    steps: list[JSONDict] = []
    output: Any = None
    for step, agent in enumerate(chain, start=1):
        if (cancelled := await cancel_watch.stopped(run, iteration=step)) is not None:
            return cancelled
        child_id = agents_mod.child_job_id(f"{item.job_id}:prompt:{step}")
        inputs = traces.preview(current)
        # Laddr's keys (target_agent, task_id, payload) and ours
        delegation = await tracer.emit(
            "delegation",
            {
                "target_agent": agent,
                "task_id": child_id,
                "payload": inputs,
                "from": prompt_name,
                "to_agent": agent,
                "step": step,
                "of": len(chain),
                "child_job_id": child_id,
                "inputs": inputs,
            },
        )
        # the agent's task_start names this delegation as its parent trace (a child re-attached by a
        # later attempt keeps the context of its first submit: the first attempt's delegation, also logged)
        final = await run.run_child(
            child_id=child_id,
            command_id=f"{item.job_id}:prompt:{step}:submit",
            plugin=agents_mod.AGENT,
            command=agent,
            payload=current,
            submitted_by="prompt",
            context={"prompt_id": item.job_id, "step": step, traces.PARENT_TRACE: delegation},
        )
        if final.type != "job.succeeded":
            error = f"agent {agent!r} (step {step} of {len(chain)}) failed: {builtin.child_error(final)}"
            await tracer.emit(
                "task_error",
                {
                    "error": error,
                    "agent": agent,
                    "step": step,
                    "child_job_id": child_id,
                    "worker": prompt_name,
                    "ended_at": traces.now(),
                },
            )
            detail = {"failed_agent": agent, "step": step, "steps": steps}
            return protocol.Outcome(
                status="failed",
                error=error,
                retry=False,
                duration_ms=run.elapsed_ms,
                response={"status": "error", "error": error, "retry": False, "result": detail},
            )
        output = output_text(await run.child_result(final))
        steps.append({"agent": agent, "job_id": child_id, "step": step})
        current = {"input": output}
    result = {"result": output, "prompt_name": prompt_name, "mode": item.command, "agents": chain, "steps": steps}
    return protocol.Outcome(status="succeeded", response={"status": "ok", "result": result}, duration_ms=run.elapsed_ms)

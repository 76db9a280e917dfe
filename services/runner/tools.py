"""An agent's tools: plugin commands offered to the model as functions, and the execution of one
tool call as a child job of the agent's job (or a cache hit).

The agent loop calls `Toolbox.schemas()` for the request and `Toolbox.call(call, iteration, index)`
for each tool call the model makes (several at once when the model makes several in one message);
it gets back the text of the tool message. Traces, with Laddr's keys (`tool`, `params`, `worker`,
`started_at`/`ended_at`/`duration_ms`, `status`, `result_preview`) plus ours (`call_id`, `iteration`,
`child_job_id`): `tool_call`, then `tool_result` / `tool_error` (a failed child, bad arguments, an unknown tool, a
command beyond the scopes of the caller who started the run (`code: forbidden`, checked against the
job's authority before anything runs; services/core/scopes.py) — the model is told and may react), or `cache_hit` when an `idempotent: true` command's result for
the same payload is younger than the agent's `tool_cache_ttl` (no child job then).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import jsonschema
import nats.errors
import nats.js.errors
import orjson

from services.core import agents as agents_mod
from services.core import catalog as catalog_mod
from services.core import errors, logging, scopes, subjects, values
from services.runner import builtin, llm, traces

log = logging.get("runner.tools")

JSONDict = dict[str, Any]
#: a cached result must fit in one KV message with room to spare
CACHE_MAX_BYTES = 256 * 1024


def cache_key(plugin: str, command: str, payload: JSONDict) -> str:
    digest = hashlib.sha256(
        f"{plugin}\x00{command}\x00".encode() + orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    ).hexdigest()
    return f"tc.{digest}"


def tool_message(value: Any) -> str:
    """The content of a tool message: text as it is, anything else as JSON."""
    return value if isinstance(value, str) else orjson.dumps(value, default=str).decode()


class Toolbox:
    def __init__(self, run: builtin.Run, spec: agents_mod.AgentSpec) -> None:
        self.run = run
        self.spec = spec
        self.by_function = spec.tool_names()
        #: the caller's authority: each tool call is checked against it before its child job is made
        self.authority = scopes.Authority.from_data(run.item.authority)

    def command(self, tool: str) -> catalog_mod.Command | None:
        plugin, _, command = tool.partition(".")
        manifest = self.run.catalog.get(plugin)
        return manifest.commands.get(command) if manifest is not None else None

    def schemas(self) -> list[JSONDict]:
        out: list[JSONDict] = []
        for function, tool in self.by_function.items():
            spec = self.command(tool)
            if spec is not None:
                out.append(llm.tool_schema(function, spec.description or f"{tool}", spec.input_schema))
        return out

    async def call(self, call: llm.ToolCall, *, iteration: int, index: int) -> str:
        """One tool call (the `index`-th of the model's message in `iteration`): the tool message's text.

        Never raises for the tool's sake: a bad, forbidden or failing call becomes a `tool_error`
        trace and an `{"error": …}` message the model can react to. A bus outage (TransientError)
        and cancellation still propagate: the attempt fails or stops as a whole."""
        span = traces.Span()
        try:
            return await self._call(call, iteration=iteration, index=index, span=span)
        except (errors.TransientError, asyncio.CancelledError):
            raise
        except Exception as exc:  # a bug here must not take the whole agent run down with it
            log.exception("tool_call_crashed", job_id=self.run.item.job_id, tool=call.name, call_id=call.id)
            return await self._error(
                call,
                self.by_function.get(call.name) or call.name,
                f"the tool call failed: {type(exc).__name__}: {exc}",
                iteration=iteration,
                span=span,
            )

    async def _call(self, call: llm.ToolCall, *, iteration: int, index: int, span: traces.Span) -> str:
        tracer = self.run.tracer
        tool = self.by_function.get(call.name)
        spec = self.command(tool) if tool else None
        if tool is None or spec is None:
            return await self._error(
                call,
                tool or call.name,
                f"unknown tool {call.name!r}; available: " + ", ".join(sorted(self.by_function)),
                iteration=iteration,
                span=span,
            )
        try:
            arguments = orjson.loads(call.arguments or "{}")
        except orjson.JSONDecodeError:
            return await self._error(
                call, tool, f"arguments are not JSON: {call.arguments[:200]!r}", iteration=iteration, span=span
            )
        if not isinstance(arguments, dict):
            return await self._error(call, tool, "arguments must be a JSON object", iteration=iteration, span=span)
        problem = values.problem(arguments)
        if problem is not None:
            return await self._error(
                call, tool, f"arguments are not accepted: {problem}", iteration=iteration, span=span
            )
        if spec.input_schema:
            found = list(
                jsonschema.validators.validator_for(spec.input_schema)(spec.input_schema).iter_errors(arguments)
            )
            if found:
                return await self._error(
                    call,
                    tool,
                    "arguments do not match the input_schema: " + "; ".join(e.message for e in found[:5]),
                    iteration=iteration,
                    span=span,
                )
        plugin, _, command = tool.partition(".")
        forbidden = scopes.forbidden_reason(self.authority, self.run.catalog, plugin, command)
        if forbidden is not None:  # never run (nor served from the cache): the model is told and may react
            return await self._error(call, tool, forbidden, iteration=iteration, code="forbidden", span=span)
        params = traces.preview(arguments)
        await tracer.emit(
            "tool_call",
            {
                "tool": tool,
                "params": params,
                "worker": self.spec.name,
                "started_at": span.started_at,
                "call_id": call.id,
                "iteration": iteration,
                "arguments": params,
            },
        )
        cacheable = spec.idempotent and self.spec.tool_cache_ttl_s > 0
        key = cache_key(plugin, command, arguments)
        if cacheable:
            hit = await self._cached(key)
            if hit is not None:
                await tracer.emit(
                    "cache_hit",
                    {
                        "tool": tool,
                        "params": params,
                        "call_id": call.id,
                        "key": key,
                        "worker": self.spec.name,
                        "age_s": round(time.time() - float(hit["at"]), 3),
                        "result": traces.preview(hit["result"]),
                    },
                )
                return tool_message(hit["result"])
        item = self.run.item
        # the id depends on the call's place only (attempt, iteration, index), never on when it ran:
        # calls run at once get distinct ids, and each is submitted once (run_child checks COMMANDS)
        seed = f"{item.job_id}:{item.attempt}:tool:{iteration}:{index}"
        child_id = agents_mod.child_job_id(seed)
        final = await self.run.run_child(
            child_id=child_id,
            command_id=seed,
            plugin=plugin,
            command=command,
            payload=arguments,
            submitted_by="agent",
            context={"agent": self.spec.name, "tool_call_id": call.id},
        )
        if final.type != "job.succeeded":
            return await self._error(
                call, tool, builtin.child_error(final), iteration=iteration, child_job_id=child_id, span=span
            )
        result = await self.run.child_result(final)
        await tracer.emit(
            "tool_result",
            {
                "tool": tool,
                "worker": self.spec.name,
                **span.end(),
                "status": "success",
                "result_preview": traces.result_preview(result),
                "result": traces.preview(result),
                "call_id": call.id,
                "child_job_id": child_id,
                "iteration": iteration,
            },
        )
        if cacheable:
            await self._store(key, result)
        return tool_message(result)

    async def _error(
        self,
        call: llm.ToolCall,
        tool: str,
        error: str,
        *,
        iteration: int,
        span: traces.Span,
        child_job_id: str | None = None,
        code: str | None = None,
    ) -> str:
        trace: JSONDict = {
            "tool": tool,
            "worker": self.spec.name,
            **span.end(),
            "error": error,
            "call_id": call.id,
            "iteration": iteration,
            "child_job_id": child_job_id,
        }
        if code is not None:
            trace["code"] = code
        await self.run.tracer.emit("tool_error", trace)
        return orjson.dumps({"error": error, "code": code} if code else {"error": error}).decode()

    async def _cached(self, key: str) -> JSONDict | None:
        """A fresh cached result; the cache is best effort, so an unreachable bucket is a miss."""
        try:
            kv = await self.run.bus.kv(subjects.KV_TOOL_CACHE)
            entry = await kv.get(key)
        except (nats.errors.Error, TimeoutError):
            return None
        try:
            record = orjson.loads(entry.value or b"{}")
        except orjson.JSONDecodeError:
            return None
        fresh = time.time() - float(record.get("at") or 0) <= self.spec.tool_cache_ttl_s
        return record if fresh and "result" in record else None

    async def _store(self, key: str, result: Any) -> None:
        raw = orjson.dumps({"at": time.time(), "result": result}, default=str)
        if len(raw) > CACHE_MAX_BYTES:
            return
        try:
            kv = await self.run.bus.kv(subjects.KV_TOOL_CACHE)
            await kv.put(key, raw)
        except (nats.errors.Error, TimeoutError) as exc:
            log.warning("tool_cache_store_failed", job_id=self.run.item.job_id, key=key, error=str(exc))

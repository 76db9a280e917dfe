"""The Laddr dialect's vocabulary: `agents.<name>` of the config parsed into `AgentSpec`s, the
reserved job kinds (`agent`, `prompt`) and the checks every actor shares.

An agent run is a job with plugin "agent" and command "<agent name>"; a prompt is a job with
plugin "prompt" and command "single" or "sequential". The config loader calls `parse_all`
(shape errors are config errors); the dispatcher calls `rejection_reason` for every submit of
a reserved kind; the runner and the API call `problems` to name tools that do not exist.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from services.core import durations

if TYPE_CHECKING:
    from services.core import catalog as catalog_mod
    from services.core import config as config_mod

#: the plugin name of agent runs (command = the agent's name)
AGENT = "agent"
#: the plugin name of prompt executions (command = the mode)
PROMPT = "prompt"
RESERVED = frozenset({AGENT, PROMPT})
PROMPT_MODES = ("single", "sequential")

#: providers that speak the OpenAI-compatible chat-completions wire format
OPENAI_COMPATIBLE = frozenset({"openai", "openai-compatible", "ollama", "vllm", "lmstudio", "llama.cpp"})
#: the offline provider: no network, a deterministic echo of the last user message
ECHO = "echo"
DEFAULT_MAX_ITERATIONS = 6
#: tool calls of one model message that run as child jobs at the same time
DEFAULT_MAX_PARALLEL_TOOLS = 4
DEFAULT_LLM_TIMEOUT_S = 60.0
#: OpenAI function names allow [a-zA-Z0-9_-]: "<plugin>.<command>" becomes "<plugin>__<command>"
TOOL_SEPARATOR = "__"
_NAMESPACE = uuid.UUID("5b0c6f3e-7d1a-4c55-9a53-1e7d0e0c4a11")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LlmSettings:
    #: "echo" (offline) or any OpenAI-compatible provider name (recorded in llm_usage traces)
    provider: str = "openai"
    base_url: str = ""
    model: str = ""
    api_key: str | None = None
    timeout_s: float = DEFAULT_LLM_TIMEOUT_S
    temperature: float | None = None
    max_tokens: int | None = None

    @property
    def offline(self) -> bool:
        return self.provider == ECHO


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AgentSpec:
    name: str
    role: str = ""
    goal: str = ""
    instructions: str = ""
    llm: LlmSettings = LlmSettings()
    #: "<plugin>.<command>" entries, in the order the model sees them
    tools: tuple[str, ...] = ()
    max_iterations: int = DEFAULT_MAX_ITERATIONS
    #: how long a result of an `idempotent: true` tool command is reused; 0 = no cache
    tool_cache_ttl_s: float = 0.0
    #: concurrent runs of this agent across all runners; None = service.max_workers
    parallelism: int | None = None
    #: tool calls of one model message run at once (each a child job); 1 = one after another
    max_parallel_tools: int = DEFAULT_MAX_PARALLEL_TOOLS

    def tool_names(self) -> dict[str, str]:
        """OpenAI function name → "<plugin>.<command>"."""
        return {function_name(tool): tool for tool in self.tools}


def function_name(tool: str) -> str:
    plugin, _, command = tool.partition(".")
    return f"{plugin}{TOOL_SEPARATOR}{command}"


def parse(name: str, doc: Mapping[str, Any]) -> AgentSpec:
    """One `agents.<name>` section (already schema-checked); ValueError names what is wrong."""
    llm = doc.get("llm") or {}
    provider = str(llm.get("provider") or "openai")
    if provider != ECHO:
        for key in ("base_url", "model"):
            if not llm.get(key):
                raise ValueError(
                    f"agents.{name}.llm.{key} is required (or use `provider: echo`, the offline "
                    "provider that needs no network)"
                )
    settings = LlmSettings(
        provider=provider,
        base_url=str(llm.get("base_url") or "").rstrip("/"),
        model=str(llm.get("model") or ("echo" if provider == ECHO else "")),
        api_key=str(llm["api_key"]) if llm.get("api_key") else None,
        timeout_s=durations.parse_seconds(llm.get("timeout", DEFAULT_LLM_TIMEOUT_S)),
        temperature=llm.get("temperature"),
        max_tokens=llm.get("max_tokens"),
    )
    tools = tuple(str(t) for t in doc.get("tools") or ())
    for tool in tools:
        plugin, dot, command = tool.partition(".")
        if not dot or not plugin or not command:
            raise ValueError(f"agents.{name}.tools: {tool!r} must be <plugin>.<command>")
    return AgentSpec(
        name=name,
        role=str(doc.get("role") or ""),
        goal=str(doc.get("goal") or ""),
        instructions=str(doc.get("instructions") or ""),
        llm=settings,
        tools=tools,
        max_iterations=int(doc.get("max_iterations") or DEFAULT_MAX_ITERATIONS),
        tool_cache_ttl_s=durations.parse_seconds(doc.get("tool_cache_ttl", 0)),
        parallelism=doc.get("parallelism"),
        max_parallel_tools=int(doc.get("max_parallel_tools") or DEFAULT_MAX_PARALLEL_TOOLS),
    )


def parse_all(section: Mapping[str, Any]) -> dict[str, AgentSpec]:
    return {name: parse(name, doc or {}) for name, doc in section.items()}


def specs(config: config_mod.Config) -> dict[str, AgentSpec]:
    """The configured agents (the loader has already validated them)."""
    return parse_all(config.agents)


def problems(spec: AgentSpec, catalog: catalog_mod.Catalog, config: config_mod.Config) -> list[str]:
    """Why the agent's tools cannot run here (empty = fine): unknown plugins or commands, disabled plugins."""
    out: list[str] = []
    for tool in spec.tools:
        plugin, _, command = tool.partition(".")
        if plugin in RESERVED:
            out.append(f"tool {tool!r}: agents and prompts cannot be tools")
            continue
        manifest = catalog.get(plugin)
        if manifest is None:
            out.append(f"tool {tool!r}: no plugin {plugin!r}")
        elif command not in manifest.commands:
            out.append(f"tool {tool!r}: plugin {plugin!r} has no command {command!r}")
        elif not config.plugin(plugin).enabled:
            out.append(f"tool {tool!r}: plugin {plugin!r} is disabled")
    return out


def rejection_reason(data: Mapping[str, Any], catalog: catalog_mod.Catalog, config: config_mod.Config) -> str | None:
    """Why a submit of an agent run or a prompt cannot become a job (None when it can)."""
    plugin, command = data.get("plugin"), data.get("command")
    payload = data.get("payload", {})
    if not isinstance(payload, dict):
        return "payload must be an object"
    if not config.plugin(str(plugin)).enabled:
        return f"{plugin} jobs are disabled (plugins.{plugin}.enabled is false)"
    known = specs(config)
    if plugin == AGENT:
        spec = known.get(str(command))
        if spec is None:
            return f"unknown agent {command!r}"
        found = problems(spec, catalog, config)
        return f"agent {command!r} is misconfigured: " + "; ".join(found) if found else None
    if command not in PROMPT_MODES:
        return f"prompt mode must be one of {', '.join(PROMPT_MODES)}, not {command!r}"
    chain = payload.get("agents")
    if not isinstance(chain, list) or not chain or not all(isinstance(a, str) for a in chain):
        return "a prompt needs a non-empty list of agent names in payload.agents"
    if command == "single" and len(chain) != 1:
        return "a single-mode prompt runs exactly one agent"
    for name in chain:
        if name not in known:
            return f"unknown agent {name!r}"
    return None


def child_job_id(seed: str) -> str:
    """A job id derived from `seed` (e.g. "<job_id>:<attempt>:tool:<i>:<j>"): a redelivery submits the same child."""
    return str(uuid.uuid5(_NAMESPACE, seed))

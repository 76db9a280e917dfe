"""Pipeline DSL compiler: `pipelines:` of the config → a graph of `uses` nodes per pipeline.

A step is exactly one of `uses` (a plugin's handle command, or `plugin.command`), `call`
(another pipeline, inlined, inheriting baggage), `steps` (a nested sequence) or `split`
(parallel branches). Sequences link every exit of a step to every entry of the next.
Everything that can be wrong is found here, at load, and named by pipeline and step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from services.core import catalog as catalog_mod
from services.core import durations, predicates, templates

STEP_KINDS = ("uses", "call", "steps", "split", "relay")
HOOKS = ("job.completed", "job.failed", "job.timed_out")
#: the plugin name of agent runs (services.core.agents.AGENT)
AGENT_PLUGIN = "agent"


class PipelineError(ValueError):
    """A pipeline definition is invalid."""


@dataclasses.dataclass(slots=True)
class Node:
    id: str
    #: "uses", or "fail" (a call chain cut by max_depth)
    kind: str
    plugin: str = ""
    command: str = "handle"
    condition: predicates.Predicate | None = None
    with_: Mapping[str, Any] | None = None
    baggage: Mapping[str, Any] | None = None
    error: str | None = None
    successors: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(slots=True)
class Pipeline:
    name: str
    trigger: str | None
    hook: str | None
    from_plugin: str | None
    condition: predicates.Predicate | None
    execution_mode: str
    timeout_s: float
    max_depth: int
    entries: list[str]
    nodes: dict[str, Node]

    @property
    def synchronous(self) -> bool:
        return self.execution_mode == "synchronous"

    def describe(self) -> dict[str, Any]:
        """The compiled route, as /config/view shows it."""
        return {
            "on": self.trigger,
            "on_hook": self.hook,
            "from_plugin": self.from_plugin,
            "execution_mode": self.execution_mode,
            "timeout_secs": self.timeout_s,
            "max_depth": self.max_depth,
            "entries": list(self.entries),
            "nodes": {
                nid: {
                    "uses": f"{n.plugin}.{n.command}" if n.kind == "uses" else None,
                    "kind": n.kind,
                    "next": list(n.successors),
                    "conditional": n.condition is not None,
                }
                for nid, n in self.nodes.items()
            },
        }


@dataclasses.dataclass(slots=True)
class Compiled:
    pipelines: dict[str, Pipeline]

    def get(self, name: str) -> Pipeline | None:
        return self.pipelines.get(name)

    def triggered_by(self, event_type: str) -> list[Pipeline]:
        return [p for p in self.pipelines.values() if p.trigger == event_type]

    def hooked_on(self, hook: str) -> list[Pipeline]:
        return [p for p in self.pipelines.values() if p.hook == hook]


class _Builder:
    def __init__(
        self, raw: Mapping[str, Mapping[str, Any]], catalog: catalog_mod.Catalog, agents: frozenset[str]
    ) -> None:
        self.raw = raw
        self.catalog = catalog
        self.agents = agents

    def build(self, name: str) -> Pipeline:
        spec = self.raw[name]
        where = f"pipelines.{name}"
        self.nodes: dict[str, Node] = {}
        self.max_depth = _int(spec.get("max_depth", 0), f"{where}.max_depth")
        mode = spec.get("execution_mode", "async")
        if mode not in ("async", "asynchronous", "synchronous", "sync"):
            raise PipelineError(f"{where}.execution_mode: must be async or synchronous, not {mode!r}")
        trigger, hook = spec.get("on"), spec.get("on-hook", spec.get("on_hook"))
        if trigger is not None and not (isinstance(trigger, str) and trigger):
            raise PipelineError(f"{where}.on: must be an event type")
        if hook is not None and hook not in HOOKS:
            raise PipelineError(f"{where}.on-hook: must be one of {', '.join(HOOKS)}")
        steps = spec.get("steps")
        if not isinstance(steps, list) or not steps:
            raise PipelineError(f"{where}.steps: a pipeline needs a non-empty list of steps")
        entries, _ = self._sequence(steps, where, prefix="", stack=(name,))
        return Pipeline(
            name=name,
            trigger=trigger,
            hook=hook,
            from_plugin=spec.get("from_plugin"),
            condition=_condition(spec.get("if"), where),
            execution_mode="synchronous" if mode in ("synchronous", "sync") else "asynchronous",
            timeout_s=_duration(spec.get("timeout", "30s"), f"{where}.timeout"),
            max_depth=self.max_depth,
            entries=entries,
            nodes=self.nodes,
        )

    def _sequence(
        self,
        steps: Sequence[Any],
        where: str,
        *,
        prefix: str,
        stack: tuple[str, ...],
    ) -> tuple[list[str], list[str]]:
        entries: list[str] | None = None
        exits: list[str] = []
        for i, step in enumerate(steps):
            step_entries, step_exits = self._step(step, f"{where}.steps[{i}]", auto_id=f"{prefix}{i}", stack=stack)
            if entries is None:
                entries = step_entries
            else:
                for node_id in exits:
                    self.nodes[node_id].successors.extend(step_entries)
            exits = step_exits
        return entries or [], exits

    def _step(self, step: Any, where: str, *, auto_id: str, stack: tuple[str, ...]) -> tuple[list[str], list[str]]:
        if not isinstance(step, dict):
            raise PipelineError(f"{where}: a step must be an object")
        kinds = [k for k in STEP_KINDS if k in step]
        step_id = str(step.get("id") or auto_id)
        where = f"{where} ({step_id})" if "id" in step else where
        if len(kinds) != 1:
            raise PipelineError(f"{where}: a step is exactly one of uses, call, steps, split (found {kinds or 'none'})")
        kind = kinds[0]
        for key in ("with", "baggage"):
            if key in step and kind != "uses":
                raise PipelineError(f"{where}: '{key}' is only allowed on a uses step")
        if "if" in step and kind != "uses":
            raise PipelineError(f"{where}: 'if' is only allowed on a uses step")
        if kind == "relay":
            raise PipelineError(f"{where}: relay steps are not supported by Headrace")
        if kind == "uses":
            return self._uses(step, where, step_id)
        if kind == "steps":
            return self._sequence(
                step["steps"] if isinstance(step["steps"], list) else [], where, prefix=f"{step_id}.", stack=stack
            )
        if kind == "split":
            branches = step["split"]
            if not isinstance(branches, list) or not branches:
                raise PipelineError(f"{where}.split: needs a non-empty list of branches")
            entries, exits = [], []
            for j, branch in enumerate(branches):
                e, x = self._step(branch, f"{where}.split[{j}]", auto_id=f"{step_id}.b{j}", stack=stack)
                entries += e
                exits += x
            return entries, exits
        return self._call(step["call"], where, step_id, stack)

    def _uses(self, step: dict[str, Any], where: str, step_id: str) -> tuple[list[str], list[str]]:
        target = step["uses"]
        if not isinstance(target, str) or not target:
            raise PipelineError(f"{where}.uses: must name a plugin")
        plugin, _, command = target.partition(".")
        command = command or "handle"
        if plugin == AGENT_PLUGIN:  # `uses: agent.<name>` runs an LLM agent as the step
            if command not in self.agents:
                raise PipelineError(f"{where}.uses: unknown agent {command!r}")
        else:
            manifest = self.catalog.get(plugin)
            if manifest is None:
                raise PipelineError(f"{where}.uses: unknown plugin {plugin!r}")
            if command not in manifest.commands:
                raise PipelineError(f"{where}.uses: plugin {plugin!r} has no command {command!r}")
        if step_id in self.nodes:
            raise PipelineError(f"{where}: duplicate step id {step_id!r}")
        with_ = step.get("with")
        if with_ is not None:
            if not isinstance(with_, dict):
                raise PipelineError(f"{where}.with: must be an object")
            for key, template in with_.items():
                try:
                    templates.check(template)
                except templates.TemplateError as exc:
                    raise PipelineError(f"{where}.with.{key}: {exc}") from exc
        baggage = step.get("baggage")
        if baggage is not None:
            _check_baggage(baggage, f"{where}.baggage")
        self.nodes[step_id] = Node(
            id=step_id,
            kind="uses",
            plugin=plugin,
            command=command,
            condition=_condition(step.get("if"), where),
            with_=with_,
            baggage=baggage,
        )
        return [step_id], [step_id]

    def _call(self, target: Any, where: str, step_id: str, stack: tuple[str, ...]) -> tuple[list[str], list[str]]:
        if target not in self.raw:
            raise PipelineError(f"{where}.call: unknown pipeline {target!r}")
        if target in stack:
            if not self.max_depth:
                raise PipelineError(f"{where}.call: call cycle {' -> '.join((*stack, target))} needs max_depth")
            if len(stack) > self.max_depth:
                node_id = f"{step_id}.depth"
                self.nodes[node_id] = Node(
                    id=node_id, kind="fail", error=f"max_depth {self.max_depth} exceeded calling {target!r}"
                )
                return [node_id], [node_id]
        steps = self.raw[target].get("steps") or []
        return self._sequence(steps, f"{where}.call({target})", prefix=f"{step_id}>{target}.", stack=(*stack, target))


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PipelineError(f"{where}: must be a non-negative integer")
    return value


def _duration(value: Any, where: str) -> float:
    try:
        return durations.parse_seconds(value)
    except (ValueError, TypeError) as exc:
        raise PipelineError(f"{where}: {exc}") from exc


def _condition(spec: Any, where: str) -> predicates.Predicate | None:
    if spec is None:
        return None
    try:
        return predicates.compile_predicate(spec)
    except predicates.PredicateError as exc:
        raise PipelineError(f"{where}.if: {exc}") from exc


def _check_baggage(spec: Any, where: str) -> None:
    if not isinstance(spec, dict) or not spec:
        raise PipelineError(f"{where}: must be an object")
    if "from" in spec:
        if set(spec) - {"from", "namespace"} or not isinstance(spec.get("namespace"), str):
            raise PipelineError(f"{where}: the import form is {{from: payload.x, namespace: name}}")
        sources = [spec["from"]]
    else:
        sources = list(spec.values())
    for source in sources:
        if not isinstance(source, str) or not source.startswith("payload."):
            raise PipelineError(f"{where}: baggage is claimed from payload.* paths, not {source!r}")


def compile_all(
    raw_pipelines: Sequence[Mapping[str, Any]], catalog: catalog_mod.Catalog, agents: frozenset[str] = frozenset()
) -> Compiled:
    """Compile every pipeline; raises PipelineError naming the first problem."""
    raw: dict[str, Mapping[str, Any]] = {}
    for i, spec in enumerate(raw_pipelines):
        name = spec.get("name") if isinstance(spec, Mapping) else None
        if not isinstance(name, str) or not name:
            raise PipelineError(f"pipelines[{i}]: a pipeline needs a name")
        if name in raw:
            raise PipelineError(f"pipelines[{i}]: duplicate pipeline name {name!r}")
        raw[name] = spec
    builder = _Builder(raw, catalog, agents)
    return Compiled(pipelines={name: builder.build(name) for name in raw})

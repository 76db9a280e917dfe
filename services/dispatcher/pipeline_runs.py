"""Pipeline runs: the dispatcher's I/O around `routing` and `trees`.

cmd.job.<root>.run            → root job + entry children           (start)
a child job is final          → children of the next steps; root final when none is open (advance)
plugin / ingested event       → every pipeline whose `on` matches starts (route_event)
a job succeeded / went dead   → `on-hook` pipelines start (hooks)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from services.core import bus as bus_mod
from services.core import config as config_mod
from services.core import envelope, logging, offload, subjects
from services.core import pipelines as pipelines_mod
from services.dispatcher import routing, trees

log = logging.get("pipelines")

Published = list[tuple[str, envelope.Envelope]]
SubmitDecider = Callable[[envelope.Envelope], Awaitable[Published]]

FINAL_CHILD = {
    "job.succeeded": "succeeded",
    "job.dead": "dead",
    "job.skipped": "skipped",
    "job.cancelled": "cancelled",
    "job.rejected": "failed",
}


class PipelineRuns:
    def __init__(
        self, bus: bus_mod.Bus, config: config_mod.Config, *, source: str, decide_submit: SubmitDecider
    ) -> None:
        self.bus = bus
        self.config = config
        self.source = source
        self.decide_submit = decide_submit
        self.compiled: pipelines_mod.Compiled = config.routes or pipelines_mod.Compiled(pipelines={})
        self.plugin_config = {name: dict(p.config) for name, p in config.plugins.items()}
        self.tree_cache = trees.Cache()

    async def _kv(self) -> Any:
        return await self.bus.kv(subjects.KV_TREES)

    async def _children(self, dispatch: routing.Dispatch) -> Published:
        out: Published = list(dispatch.events)
        for cmd in dispatch.submits:
            out.extend(await self.decide_submit(cmd))
        return out

    # --- start --------------------------------------------------------------------

    async def start(
        self,
        pipeline: pipelines_mod.Pipeline,
        root_id: str,
        *,
        event: dict[str, Any],
        submitted_by: str,
        parent_job_id: str | None,
        correlation_id: str | None,
        depth: int,
        context: dict[str, Any] | None = None,
        hooked: bool = False,
    ) -> Published:
        """Everything that starting `pipeline` with `event` publishes."""
        correlation = correlation_id or root_id
        route = routing.Route(pipeline=pipeline.name, root=root_id, depth=depth, hooked=hooked)
        payload = event.get("payload") or {}
        out = routing.root_events(
            root_id,
            pipeline,
            payload=payload,
            submitted_by=submitted_by,
            parent_job_id=parent_job_id,
            correlation_id=correlation,
            route=route,
            trigger=str(event.get("type")),
            source=self.source,
        )
        dispatch = routing.Dispatch()
        for node_id in pipeline.entries:
            routing.dispatch_node(
                pipeline,
                node_id,
                event,
                parent_job_id=root_id,
                event_index=0,
                context=dict(context or {}),
                route=route,
                correlation_id=correlation,
                source=self.source,
                plugin_config=self.plugin_config,
                out=dispatch,
            )

        def mutate(state: trees.State | None) -> trees.State:
            state = state or trees.new_state(pipeline.name, correlation)
            trees.add_children(state, dispatch.children)
            for step_id, error in dispatch.failures:
                trees.fail(state, step_id, error)
            return state

        _, state = await trees.update(await self._kv(), root_id, mutate, self.tree_cache)
        out.extend(await self._children(dispatch))
        out.extend(self._finish_if_done(root_id, state))
        return out

    def _finish_if_done(self, root_id: str, state: trees.State) -> Published:
        if state["open"]:
            return []
        return [
            routing.root_outcome(
                root_id,
                state["pipeline"],
                failed=state["failed"],
                result=state["result"],
                tree=trees.tree(state),
                correlation_id=state["correlation_id"],
                source=self.source,
            )
        ]

    # --- advance ------------------------------------------------------------------

    async def advance(self, env: envelope.Envelope, queued: dict[str, Any]) -> Published:
        """A routed child job reached a final event: dispatch its successors, close it, maybe finish the root."""
        route = routing.Route.from_dict(queued.get("route"))
        job_id = env.job_id
        if route is None or job_id is None:
            return []
        pipeline = self.compiled.get(route.pipeline)
        status = FINAL_CHILD[env.type]
        dispatch = routing.Dispatch()
        result = env.data.get("result") if env.type == "job.succeeded" else None
        if pipeline is not None and env.type == "job.succeeded":
            node = pipeline.nodes.get(str(queued.get("step_id")))
            for i, emitted_event in enumerate(routing.emitted_events(result, env)):
                event = routing.with_upstream(
                    emitted_event,
                    plugin=queued.get("plugin"),
                    pipeline=route.pipeline,
                    step_id=queued.get("step_id"),
                    result=result,
                )
                for successor in node.successors if node else []:
                    routing.dispatch_node(
                        pipeline,
                        successor,
                        event,
                        parent_job_id=job_id,
                        event_index=i,
                        context=dict(queued.get("context") or {}),
                        route=route,
                        correlation_id=env.correlation_id or route.root,
                        source=self.source,
                        plugin_config=self.plugin_config,
                        out=dispatch,
                    )
        failure = None
        if status in ("dead", "cancelled", "failed"):
            failure = (str(queued.get("step_id")), str(env.data.get("error") or env.data.get("reason") or status))

        def mutate(state: trees.State | None) -> trees.State:
            state = state or trees.new_state(route.pipeline, env.correlation_id or route.root)
            trees.add_children(state, dispatch.children)
            for step_id, error in dispatch.failures + ([failure] if failure else []):
                trees.fail(state, step_id, error)
            if env.type == "job.succeeded" and result is not None:
                state["result"] = result
            trees.close_job(state, job_id, status)
            return state

        _, state = await trees.update(await self._kv(), route.root, mutate, self.tree_cache)
        out = await self._children(dispatch)
        out.extend(self._finish_if_done(route.root, state))
        return out

    # --- events that start pipelines ---------------------------------------------------

    async def route_event(
        self,
        event: dict[str, Any],
        *,
        cause_id: str,
        from_plugin: str | None,
        parent_job_id: str | None,
        correlation_id: str | None,
        depth: int,
        submitted_by: str = "route",
    ) -> Published:
        """Start every pipeline whose `on` is this event's type (and whose from_plugin and `if` admit it)."""
        out: Published = []
        for pipeline in self.compiled.triggered_by(str(event.get("type"))):
            if not routing.matches(pipeline, payload=event.get("payload") or {}, from_plugin=from_plugin):
                continue
            root_id = routing.derived_id(cause_id, pipeline.name)
            if pipeline.max_depth and depth > pipeline.max_depth:
                log.warning("route_depth_exceeded", pipeline=pipeline.name, depth=depth, cause=cause_id)
                out.extend(self._depth_exceeded(pipeline, root_id, event, parent_job_id, correlation_id, depth))
                continue
            out.extend(
                await self.start(
                    pipeline,
                    root_id,
                    event=event,
                    submitted_by=submitted_by,
                    parent_job_id=parent_job_id,
                    correlation_id=correlation_id,
                    depth=depth,
                )
            )
        return out

    def _depth_exceeded(
        self,
        pipeline: pipelines_mod.Pipeline,
        root_id: str,
        event: dict[str, Any],
        parent_job_id: str | None,
        correlation_id: str | None,
        depth: int,
    ) -> Published:
        correlation = correlation_id or root_id
        route = routing.Route(pipeline=pipeline.name, root=root_id, depth=depth)
        out = routing.root_events(
            root_id,
            pipeline,
            payload=event.get("payload") or {},
            submitted_by="route",
            parent_job_id=parent_job_id,
            correlation_id=correlation,
            route=route,
            trigger=str(event.get("type")),
            source=self.source,
        )
        out.append(
            routing.root_outcome(
                root_id,
                pipeline.name,
                result=None,
                tree=[],
                correlation_id=correlation,
                source=self.source,
                failed={
                    "step_id": "(start)",
                    "error": f"max_depth {pipeline.max_depth} exceeded (route depth {depth})",
                },
            )
        )
        return out

    async def after_job(self, env: envelope.Envelope, queued: dict[str, Any] | None) -> Published:
        """Routing after any job's final event: advance its tree, start pipelines on its events, fire hooks."""
        out: Published = []
        queued = queued or {}
        if env.type == "job.succeeded" and offload.is_pointer(env.data.get("result")):
            # an offloaded result still routes on the events it carries
            try:
                resolved = await offload.resolve(self.bus, env.data["result"])
            except offload.OffloadMissing as exc:
                log.error("offloaded_result_missing", job_id=env.job_id, error=str(exc))
            else:
                env = dataclasses.replace(env, data={**env.data, "result": resolved})
        route = routing.Route.from_dict(queued.get("route"))
        if route is not None:
            out.extend(await self.advance(env, queued))
        depth = route.depth if route else 0
        job_id = env.job_id or ""
        if env.type == "job.succeeded":
            for i, event in enumerate((env.data.get("result") or {}).get("events") or []):
                if isinstance(event, dict) and event.get("type"):
                    out.extend(
                        await self.route_event(
                            routing.stamp(event, env, i),
                            cause_id=f"{job_id}:{i}",
                            from_plugin=env.data.get("plugin"),
                            parent_job_id=job_id,
                            correlation_id=env.correlation_id,
                            depth=depth + 1,
                        )
                    )
        if not (route and route.hooked):
            out.extend(await self._hooks(env, job_id))
        return out

    async def _hooks(self, env: envelope.Envelope, job_id: str) -> Published:
        if env.type == "job.succeeded":
            hook = "job.completed"
        elif env.type == "job.dead":
            hook = "job.timed_out" if env.data.get("last_status") == "timed_out" else "job.failed"
        else:
            return []
        out: Published = []
        payload = {
            "job_id": job_id,
            "plugin": env.data.get("plugin"),
            "command": env.data.get("command"),
            "status": "succeeded" if hook == "job.completed" else "dead",
            "error": env.data.get("error"),
            "result": env.data.get("result"),
        }
        for pipeline in self.compiled.hooked_on(hook):
            if not routing.matches(pipeline, payload=payload, from_plugin=payload["plugin"]):
                continue
            out.extend(
                await self.start(
                    pipeline,
                    routing.derived_id(job_id, "hook", pipeline.name),
                    event={"type": hook, "payload": payload},
                    submitted_by="hook",
                    parent_job_id=job_id,
                    correlation_id=env.correlation_id,
                    depth=1,
                    hooked=True,
                )
            )
        return out

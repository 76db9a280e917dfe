"""GET /topology: the pipeline graph in Ductile's shape (topology_handler.go handleTopology).

    {"version", "captured_at", "plugins": [{"name", "version"?, "active", "inputs": [{"signal", "command"}],
                                           "outputs": [{"signal", "command"}]}],
     "signals": [{"name", "producers": [{"plugin", "command"}], "consumers": [{"plugin", "command"}]}]}

Outputs come from each manifest command's `values.emit[].event`. Inputs come from the compiled
pipelines: an entry step consumes the pipeline's trigger (`on:`, or its `on-hook:` signal); a later
step consumes what its upstream step's plugin declares it emits, else the core's
`ductile.step.succeeded` (the event that moves a sequential pipeline on). Plugins are the catalog
plus any plugin a pipeline names (those with `active: false`), sorted; signals sorted by name.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiohttp import web

from services.api import auth, state
from services.core import catalog as catalog_mod
from services.core import envelope
from services.core.version import version

routes = web.RouteTableDef()

STEP_SUCCEEDED = "ductile.step.succeeded"


def _emits(catalog: catalog_mod.Catalog, plugin: str, command: str | None = None) -> list[tuple[str, str]]:
    """(signal, command) pairs the plugin's manifest declares it emits (one command, or all)."""
    manifest = catalog.get(plugin)
    if manifest is None:
        return []
    out: list[tuple[str, str]] = []
    for name, spec in manifest.commands.items():
        if command is not None and name != command:
            continue
        values = spec.values if isinstance(spec.values, dict) else {}
        for entry in values.get("emit") or []:
            if isinstance(entry, dict) and isinstance(entry.get("event"), str) and entry["event"]:
                out.append((entry["event"], name))
    return out


def _inputs(routes_: Any, catalog: catalog_mod.Catalog) -> Iterable[tuple[str, str, str]]:
    """(plugin, command, signal) of every `uses` step of every compiled pipeline."""
    for pipeline in routes_.pipelines.values() if routes_ is not None else ():
        upstream: dict[str, list[str]] = {}
        for nid, node in pipeline.nodes.items():
            for successor in node.successors:
                upstream.setdefault(successor, []).append(nid)
        for nid, node in pipeline.nodes.items():
            if node.kind != "uses":
                continue
            signals: list[str] = []
            if nid in pipeline.entries:
                signals.append(pipeline.trigger or pipeline.hook or "api.pipeline.trigger")
            for up in upstream.get(nid, []):
                before = pipeline.nodes[up]
                declared = [sig for sig, _ in _emits(catalog, before.plugin, before.command)]
                signals.extend(declared or [STEP_SUCCEEDED])
            for signal in dict.fromkeys(signals):
                yield node.plugin, node.command, signal


def build(st: state.ApiState) -> dict[str, Any]:
    catalog = st.catalog
    inputs: dict[str, list[dict[str, str]]] = {}
    outputs: dict[str, list[dict[str, str]]] = {}
    signals: dict[str, dict[str, list[dict[str, str]]]] = {}

    def signal(name: str) -> dict[str, list[dict[str, str]]]:
        return signals.setdefault(name, {"producers": [], "consumers": []})

    for plugin in catalog.plugins:
        for sig, command in _emits(catalog, plugin):
            item = {"signal": sig, "command": command}
            if item not in outputs.setdefault(plugin, []):
                outputs[plugin].append(item)
                signal(sig)["producers"].append({"plugin": plugin, "command": command})
    for plugin, command, sig in _inputs(st.config.routes, catalog):
        item = {"signal": sig, "command": command}
        if item not in inputs.setdefault(plugin, []):
            inputs[plugin].append(item)
            signal(sig)["consumers"].append({"plugin": plugin, "command": command})
    plugins = []
    for name in sorted({*catalog.plugins, *inputs}):
        manifest = catalog.get(name)
        entry: dict[str, Any] = {"name": name}
        if manifest is not None and manifest.version:
            entry["version"] = str(manifest.version)
        entry.update(active=manifest is not None, inputs=inputs.get(name, []), outputs=outputs.get(name, []))
        plugins.append(entry)
    return {
        "version": version(),
        "captured_at": envelope.rfc3339(envelope.now()),
        "plugins": plugins,
        "signals": [{"name": name, **signals[name]} for name in sorted(signals)],
    }


@routes.get("/topology")
async def topology(request: web.Request) -> web.Response:
    auth.require(request, "system:ro", "system:rw")
    return web.json_response(build(state.of(request)), dumps=state.dumps)

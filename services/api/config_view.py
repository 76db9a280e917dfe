"""GET /config/view (`*` scope): the loaded configuration with its secrets redacted.

Rules, applied to the merged document after `${ENV}` substitution (so substituted secrets
are covered too):

- any key, at any depth and in any case, containing one of `SENSITIVE_WORDS` has every
  string or number beneath it replaced by "[REDACTED]" (booleans and nulls stay: they
  are switches, not secrets, and the structure stays readable);
- `api.auth.tokens` keeps one entry per token with its name and scopes only: the token
  value is dropped, not even shown redacted;
- a password inside a URL (`postgresql://user:pw@host/db`, `nats://u:pw@host`) is redacted
  wherever the URL appears.

`tokens` is Ductile's: `[{"name"}]`, the vault secrets `secret_ref` can resolve (names only).
`compiled_routes` is Ductile's: pipeline -> a list of routes (source -> destination step);
`compiled_pipelines` shows each configured pipeline as compiled (`{name: {"on", "steps", ...}}`);
Ductile's Go field names (`Name`, `TickInterval` in ns, ...) are not added: the reference we serve
(shared/spec/ductile-api.md) shows the lower-case keys, and it wins where it speaks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from services.api import auth, state

routes = web.RouteTableDef()

REDACTED = "[REDACTED]"
SENSITIVE_WORDS = ("secret", "key", "token", "password", "passwd", "api_key", "credential", "auth", "private")
#: maps whose keys are names chosen by the operator (plugins.<name>, agents.<name>), not fields
NAME_MAPS = frozenset({("plugins",), ("agents",)})
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)(?P<password>[^/\s@]+)(?P<tail>@)")


def sensitive(key: object) -> bool:
    lowered = str(key).lower()
    return any(word in lowered for word in SENSITIVE_WORDS)


def _scrub_string(value: str) -> str:
    return _URL_PASSWORD.sub(lambda m: f"{m['head']}{REDACTED}{m['tail']}", value)


def redact_all(value: Any) -> Any:
    """Every string and number beneath a sensitive key."""
    if isinstance(value, Mapping):
        return {str(k): redact_all(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_all(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    return REDACTED


def redact(value: Any, path: tuple[str, ...] = ()) -> Any:
    """The document with the values of sensitive keys redacted (recursively)."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            key = str(key)
            if path in NAME_MAPS:  # a plugin or agent name is a name, not a field
                out[key] = redact(item, (*path, key))
            elif path == ("api",) and key == "auth":
                out[key] = {"tokens": _tokens(item.get("tokens") if isinstance(item, Mapping) else None)}
            else:
                out[key] = redact_all(item) if sensitive(key) else redact(item, (*path, key))
        return out
    if isinstance(value, list | tuple):
        return [redact(v, (*path, "[]")) for v in value]
    if isinstance(value, str):
        return _scrub_string(value)
    return value


def _tokens(tokens: Any) -> list[dict[str, Any]]:
    """`api.auth.tokens` without the token values."""
    out: list[dict[str, Any]] = []
    for entry in tokens if isinstance(tokens, list) else []:
        if isinstance(entry, Mapping):
            name = entry.get("name")
            out.append(
                {
                    "name": _scrub_string(str(name)) if name is not None else None,
                    "scopes": [str(s) for s in entry.get("scopes") or []],
                }
            )
    return out


def view(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The redacted document, with `api.auth` rendered as the token names and scopes only."""
    redacted: dict[str, Any] = redact(raw)  # a mapping comes back a dict
    return redacted


def ductile_routes(compiled: Any) -> dict[str, list[dict[str, Any]]]:
    """Ductile's `compiled_routes` (config_view.go): pipeline -> its routes, each
    `{"id", "source": {...}, "destination": {"kind", "step_id", "plugin", "command"}}`. An entry step's
    source is the trigger (`trigger`, or `hook_signal` for `on-hook`), a later step's the step before it."""
    out: dict[str, list[dict[str, Any]]] = {}
    for name, pipeline in sorted((getattr(compiled, "pipelines", None) or {}).items()):
        routes_: list[dict[str, Any]] = []

        def destination(nid: str, pipeline: Any = pipeline) -> dict[str, Any]:
            node = pipeline.nodes[nid]
            dest: dict[str, Any] = {"kind": node.kind, "step_id": nid}
            if node.kind == "uses":
                dest.update(plugin=node.plugin, command=node.command)
            return dest

        for nid in pipeline.entries:
            source: dict[str, Any] = {"pipeline": name}
            if pipeline.trigger:
                source["trigger"] = pipeline.trigger
            if pipeline.hook:
                source["hook_signal"] = pipeline.hook
            if pipeline.from_plugin:
                source["source_plugin"] = pipeline.from_plugin
            routes_.append({"id": f"{name}:entry:{nid}", "source": source, "destination": destination(nid)})
        for upstream, node in pipeline.nodes.items():
            for nid in node.successors:
                routes_.append(
                    {
                        "id": f"{name}:{upstream}:{nid}",
                        "source": {"pipeline": name, "step_id": upstream},
                        "destination": destination(nid),
                    }
                )
        out[name] = redact(routes_, ("compiled_routes", name))
    return out


def compiled_pipelines(pipelines: Any, compiled: Any = None) -> dict[str, dict[str, Any]]:
    """One entry per configured pipeline: the compiled route (`Pipeline.describe()`) when the config
    carries compiled routes, else what the raw entry says (`on` and the number of steps)."""
    out: dict[str, dict[str, Any]] = {}
    known = getattr(compiled, "pipelines", None) or {}
    for pipeline in pipelines or ():
        if not isinstance(pipeline, Mapping) or not pipeline.get("name"):
            continue
        name = str(pipeline["name"])
        steps = pipeline.get("steps")
        entry: dict[str, Any] = {
            "on": redact(pipeline.get("on"), ("pipelines", "[]", "on")),
            "steps": len(steps) if isinstance(steps, list) else 0,
        }
        if name in known and hasattr(known[name], "describe"):
            entry.update(redact(known[name].describe(), ("compiled_routes", name)))
        out[name] = entry
    return out


@routes.get("/config/view")
async def config_view(request: web.Request) -> web.Response:
    auth.require(request, "*", narrow=("system:ro", "system:rw"))
    st = state.of(request)
    body = view(st.config.raw)
    compiled = getattr(st.config, "routes", None)
    body["compiled_routes"] = ductile_routes(compiled)
    body["compiled_pipelines"] = compiled_pipelines(st.config.raw.get("pipelines"), compiled)
    if st.config.vault is not None and st.config.vault.projected():
        # Ductile's `tokens`: the names (never the values) of the secrets projected from the vault
        body["tokens"] = [{"name": name} for name in sorted(st.config.vault.projected())]

    return web.json_response(body, dumps=state.dumps)

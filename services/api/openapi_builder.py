"""A table-driven OpenAPI 3.1 builder: a dialect describes its routes as `Operation` rows (and its
shapes as JSON Schemas), `document` turns the rows of the routes the app has registered into one
document. Each operation's `x-scopes` comes from the scope table (services/core/scopes.py), so the
document cannot disagree with the guard; a row whose route is not mounted is left out (the document
never lists a route that would 404).

Used for the Laddr dialect (services/api/laddr_openapi.py, GET /api/openapi.json); another dialect
(the Ductile routes) adds its own rows and schemas and calls `document` the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.core import scopes

OPENAPI_VERSION = "3.1.0"
Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(
    properties: Mapping[str, Schema],
    *,
    required: Sequence[str] = (),
    description: str | None = None,
    closed: bool = False,
) -> Schema:
    """An object schema; extra keys are allowed unless `closed` (the dialects answer supersets)."""
    out: Schema = {"type": "object", "properties": dict(properties)}
    if required:
        out["required"] = list(required)
    if closed:
        out["additionalProperties"] = False
    if description:
        out["description"] = description
    return out


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
BOOLEAN: Schema = {"type": "boolean"}
OBJECT: Schema = {"type": "object"}
TIMESTAMP: Schema = {"type": "string", "format": "date-time"}
ANY: Schema = {}


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    where: str  # path | query | header
    schema: Schema = field(default_factory=lambda: dict(STRING))
    description: str = ""
    required: bool = False

    def render(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "in": self.where,
            "required": self.required or self.where == "path",
            "schema": self.schema,
        }
        if self.description:
            out["description"] = self.description
        return out


@dataclass(frozen=True, slots=True)
class Resp:
    description: str
    schema: Schema | None = None
    media: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)

    def render(self) -> dict[str, Any]:
        out: dict[str, Any] = {"description": self.description}
        if self.schema is not None:
            out["content"] = {self.media: {"schema": self.schema}}
        if self.headers:
            out["headers"] = {name: {"description": text, "schema": STRING} for name, text in self.headers.items()}
        return out


@dataclass(frozen=True, slots=True)
class Operation:
    """One route of a dialect. `security`: the scheme names any one of which authenticates it (empty:
    open). `websocket`: the route upgrades; `messages` are the schemas of what the server sends."""

    method: str
    path: str
    summary: str
    tag: str
    responses: Mapping[str, Resp]
    description: str = ""
    params: Sequence[Param] = ()
    body: Schema | None = None
    body_required: bool = False
    security: Sequence[str] = ()
    websocket: bool = False
    messages: Sequence[Schema] = ()

    @property
    def key(self) -> tuple[str, str]:
        return self.method.upper(), self.path

    def operation_id(self) -> str:
        words = re.sub(r"[^a-zA-Z0-9]+", "_", self.path).strip("_") or "root"
        return f"{self.method.lower()}_{words}"

    def render(self) -> dict[str, Any]:
        path_params = re.findall(r"\{(\w+)\}", self.path)
        declared = {p.name for p in self.params if p.where == "path"}
        params = [Param(name, "path") for name in path_params if name not in declared] + list(self.params)
        out: dict[str, Any] = {"operationId": self.operation_id(), "summary": self.summary, "tags": [self.tag]}
        if self.description:
            out["description"] = self.description
        if params:
            out["parameters"] = [p.render() for p in params]
        if self.body is not None:
            out["requestBody"] = {
                "required": self.body_required,
                "content": {"application/json": {"schema": self.body}},
            }
        out["responses"] = {status: resp.render() for status, resp in self.responses.items()}
        out["security"] = [{name: []} for name in self.security]
        rule = scopes.route_rule(self.method.upper(), self.path)
        if rule is not None and rule.any_of:
            out["x-scopes"] = list(rule.any_of)
        if self.websocket:
            out["x-websocket"] = True
            out["x-messages"] = list(self.messages)
        return out


def document(
    operations: Iterable[Operation],
    registered: Iterable[tuple[str, str]],
    *,
    info: Mapping[str, Any],
    schemas: Mapping[str, Schema],
    security_schemes: Mapping[str, Any],
    tags: Sequence[Mapping[str, str]] = (),
) -> dict[str, Any]:
    """The OpenAPI document of the operations whose (METHOD, path template) is in `registered`."""
    mounted = {(m.upper(), p) for m, p in registered}
    paths: dict[str, dict[str, Any]] = {}
    used: set[str] = set()
    for op in operations:
        if op.key in mounted:
            paths.setdefault(op.path, {})[op.method.lower()] = op.render()
            used.add(op.tag)
    out: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": dict(info),
        "paths": paths,
        "components": {"schemas": dict(schemas), "securitySchemes": dict(security_schemes)},
    }
    if tags:
        out["tags"] = [dict(t) for t in tags if t["name"] in used]
    return out

"""A table-driven OpenAPI 3.1 builder: a dialect describes its routes as `Operation` rows (and its
shapes as JSON Schemas), `document` turns the rows of the routes the app has registered into one
document. Each operation's scopes come from the scope table (services/core/scopes.py), so the
document cannot disagree with the guard: `x-scopes` (the scopes any one of which admits it) and the
same scopes as OpenAPI security requirements (`[{"HTTPBearer": ["jobs:ro"]}, ...]`: OpenAPI 3.1 lets
any scheme type name the roles it needs; one requirement per scope, alternatives). A row whose route
is not mounted is left out (the document never lists a route that would 404).

The gateway's one document (GET /api/openapi.json, services/api/api_docs.py) joins the rows of both
dialects: services/api/laddr_openapi.py and services/api/ductile_openapi.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from services.api import inputs
from services.core import scopes, values

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
#: what a request body may hold where it takes any JSON (services/core/values.py): integers within 64 bits
#: (larger ones are refused, never rounded) and at most MAX_DEPTH levels of nesting
JSON_SCHEMAS: dict[str, Schema] = {
    "JsonValue": {
        "description": f"Any JSON value whose integers fit 64 bits ({values.INT_MIN} to {values.INT_MAX}), "
        f"nested at most {values.MAX_DEPTH} deep",
        "allOf": [
            {"not": {"type": "integer", "exclusiveMinimum": values.INT_MAX}},
            {"not": {"type": "integer", "exclusiveMaximum": values.INT_MIN}},
        ],
        "items": {"$ref": "#/components/schemas/JsonValue"},
        "additionalProperties": {"$ref": "#/components/schemas/JsonValue"},
    },
    "JsonObject": {
        "type": "object",
        "additionalProperties": {"$ref": "#/components/schemas/JsonValue"},
        "description": "A JSON object of JsonValues",
    },
}
JSON_OBJECT: Schema = ref("JsonObject")


def body_obj(
    properties: Mapping[str, Schema], *, required: Sequence[str] = (), description: str | None = None
) -> Schema:
    """A request body's object: other keys are ignored, but hold JsonValues like the rest (the API refuses an
    out-of-range integer or a too-deep value wherever it is)."""
    out = obj(properties, required=required, description=description)
    out["additionalProperties"] = ref("JsonValue")
    return out


#: a path parameter as the input gate admits it: 1 to 256 characters, no control characters
SEGMENT: Schema = {
    "type": "string",
    "minLength": 1,
    "maxLength": inputs.MAX_PATH_PARAM,
    "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f]+$",
}
#: a free-text query value as the input gate admits it: at most 1024 characters, no controls but tab, CR, LF
QUERY_TEXT: Schema = {
    "type": "string",
    "maxLength": inputs.MAX_QUERY_VALUE,
    "pattern": "^[^\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f]*$",
}

#: the API tokens' schemes, shared by both dialects (each dialect adds its own)
BEARER, TOKEN_QUERY = "HTTPBearer", "TokenQuery"
TOKEN_SCHEMES: dict[str, Any] = {
    BEARER: {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token (api.auth.tokens, or LADDR_API_KEY). A scope admits what the narrower "
        "ones it implies admit (plugin:rw: plugin:ro; jobs:rw: jobs:ro; events:rw: events:ro; ...) and `*` "
        "admits every route",
    },
    TOKEN_QUERY: {
        "type": "apiKey",
        "in": "query",
        "name": "token",
        "description": "The API token as `?token=`, where a browser cannot set a header: GET /events and the "
        "WebSockets only",
    },
}


def merged(*parts: Mapping[str, Any]) -> dict[str, Any]:
    """The union of named components (schemas, security schemes); a name defined twice differently is
    an error (two dialects must not silently redefine each other's shapes)."""
    out: dict[str, Any] = {}
    for part in parts:
        for name, value in part.items():
            if name in out and out[name] != value:
                raise ValueError(f"component {name!r} is defined twice, differently")
            out[name] = value
    return out


def _admits_empty(schema: Schema) -> bool:
    """Whether an empty query value is valid by `schema` (every handler reads `?x=` as an absent x)."""
    return "format" not in schema and bool(jsonschema.Draft202012Validator(schema).is_valid(""))


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    where: str  # path | query | header
    #: None: text as the input gate admits it there (SEGMENT in a path, QUERY_TEXT in a query)
    schema: Schema | None = None
    description: str = ""
    required: bool = False

    def render(self) -> dict[str, Any]:
        default = {"path": SEGMENT, "query": QUERY_TEXT}.get(self.where, STRING)
        schema = self.schema if self.schema is not None else dict(default)
        if self.where == "query" and not self.required and not _admits_empty(schema):
            schema = {"anyOf": [schema, {"const": "", "description": "empty: as if absent"}]}
        out: dict[str, Any] = {
            "name": self.name,
            "in": self.where,
            "required": self.required or self.where == "path",
            "schema": schema,
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
    #: the scope-table entry that gates it, when not its own (method, path): webhooks and the relay
    rule_key: tuple[str, str] | None = None
    #: other media types its request body may come as (webhooks take any bytes)
    body_media: Sequence[str] = ()

    @property
    def key(self) -> tuple[str, str]:
        return self.method.upper(), self.path

    def rule(self) -> scopes.Rule | None:
        method, path = self.rule_key or self.key
        return scopes.route_rule(method, path)

    def security_requirements(self) -> list[dict[str, list[str]]]:
        """The OpenAPI security requirements: `[]` for a route the table leaves open; one requirement
        per (scheme, scope) otherwise, each enough on its own (the documented scope, then the narrower
        ones the guard also admits). A route the table gates by something other than a scope (a
        webhook's or the relay's signature, the vault admin token) lists its schemes without scopes."""
        rule = self.rule()
        if rule is not None and rule.open and not (rule.webhook or rule.vault_admin):
            return []
        if rule is None or not rule.any_of:
            return [{name: []} for name in self.security]
        needed = list(dict.fromkeys((*rule.any_of, *rule.narrow)))
        return [{name: [scope]} for name in self.security for scope in needed]

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
            content = {"application/json": {"schema": self.body}}
            content.update({media: {"schema": ANY} for media in self.body_media})
            out["requestBody"] = {"required": self.body_required, "content": content}
        out["responses"] = {status: resp.render() for status, resp in self.responses.items()}
        out["security"] = self.security_requirements()
        rule = self.rule()
        if rule is not None and rule.any_of:
            out["x-scopes"] = list(rule.any_of)
        if rule is not None and rule.work:
            out["x-work"] = rule.work
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

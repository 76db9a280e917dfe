"""Plugin catalog: scans `plugin_roots` for `manifest.yaml` (YAML 1.2), validates each against
`schemas/manifest.json` and answers "which plugins and commands exist". A broken manifest
is skipped and kept as an error for /healthz, never a crash; so is a plugin whose config lacks
a key its manifest lists in `config_keys.required`.

Compact `input_schema`/`output_schema` maps (`{url: string}`) are expanded here as Ductile's
`expandSchema` does, so discovery, OpenAPI and payload validation all see the same JSON Schema.

Ductile's `validateManifest` rules a manifest here breaks too: `manifest_spec` other than
`ductile.plugin`, `manifest_version` other than 1, a protocol-2 `entrypoint` that is absolute, has
a `..` or resolves outside its plugin directory, and a world-writable plugin directory. (Headrace
stays lenient where Ductile is strict but nothing is at stake: the two keys may be left out, and
a command's `type` defaults to `write`.)
"""

from __future__ import annotations

import dataclasses
import hashlib
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import orjson

from services.core import logging, schemas, yamlio

log = logging.get("catalog")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    name: str
    #: "read" or "write"; plugin:ro tokens may call only read commands
    type: str = "write"
    description: str | None = None
    input_schema: Mapping[str, Any] | None = None
    output_schema: Mapping[str, Any] | None = None
    idempotent: bool = False
    retry_safe: bool = True
    values: Mapping[str, Any] | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FactOutput:
    """A manifest `fact_outputs` rule: a `command`'s `state_updates` recorded as a fact of `fact_type`;
    `mirror_object` makes the plugin's state that object (replaced, not merged)."""

    command: str
    fact_type: str
    source: str = "state_updates"
    compatibility_view: str = ""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    name: str
    version: str
    #: 2 (subprocess, Ductile protocol 2) or "python" (in-process `module:function`)
    protocol: int | str
    entrypoint: str
    directory: Path
    description: str | None = None
    concurrency_safe: bool = True
    config_keys: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    commands: Mapping[str, Command] = dataclasses.field(default_factory=dict)
    fact_outputs: tuple[FactOutput, ...] = ()
    raw: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def is_python(self) -> bool:
        return self.protocol == "python"

    @property
    def path(self) -> Path:
        return self.directory / "manifest.yaml"

    def facts_for(self, command: str) -> tuple[FactOutput, ...]:
        """The `fact_outputs` rules that take this command's `state_updates`."""
        return tuple(rule for rule in self.fact_outputs if rule.command == command)

    def missing_config(self, config: Mapping[str, Any]) -> list[str]:
        """The `config_keys.required` keys `config` lacks (absent or null)."""
        required = self.config_keys.get("required") or []
        return [key for key in required if config.get(key) is None]


@dataclasses.dataclass(frozen=True, slots=True)
class ManifestError:
    path: str
    error: str


@dataclasses.dataclass(frozen=True, slots=True)
class Catalog:
    plugins: Mapping[str, Manifest]
    errors: tuple[ManifestError, ...] = ()

    def get(self, name: str) -> Manifest | None:
        return self.plugins.get(name)


def expand_schema(schema: Any) -> Any:
    """Ductile's `expandSchema`: a map without `type` is the compact form `{field: type-or-schema}`,
    made `{"type": "object", "properties": {...}}` (a string value `t` becomes `{"type": t}`, any other
    value is kept; nothing nested is expanded, no `required` is added). None, a non-map, a map
    with `type` (a full JSON Schema) or `{}` (any object, and no request body) is returned as it is."""
    if not isinstance(schema, Mapping) or not schema or "type" in schema:
        return schema
    return {
        "type": "object",
        "properties": {key: {"type": value} if isinstance(value, str) else value for key, value in schema.items()},
    }


def _command(entry: str | Mapping[str, Any]) -> Command:
    if isinstance(entry, str):
        return Command(name=entry)
    return Command(
        name=entry["name"],
        type=entry.get("type", "write"),
        description=entry.get("description"),
        input_schema=expand_schema(entry.get("input_schema")),
        output_schema=expand_schema(entry.get("output_schema")),
        idempotent=bool(entry.get("idempotent", False)),
        retry_safe=bool(entry.get("retry_safe", True)),
        values=entry.get("values"),
    )


def _ductile_rules(doc: Mapping[str, Any], directory: Path) -> None:
    """Ductile's manifest rules the schema cannot say (ValueError in Ductile's words)."""
    spec = doc.get("manifest_spec")
    if spec is not None and spec != "ductile.plugin":
        raise ValueError(f'manifest_spec must be "ductile.plugin" (got {spec!r})')
    version = doc.get("manifest_version")
    if version is not None and str(version).strip() != "1":
        raise ValueError(f"manifest_version must be 1 (got {version!r})")
    if doc["protocol"] == "python":
        return
    entry = str(doc["entrypoint"])
    if Path(entry).is_absolute() or ".." in Path(entry).parts:
        raise ValueError(f"entrypoint {entry!r} must be a path inside the plugin directory (no '..', not absolute)")
    target = directory / entry
    if target.exists() and not target.resolve().is_relative_to(directory.resolve()):
        raise ValueError(f"entrypoint {entry!r} resolves outside the plugin directory")


def parse_manifest(doc: Any, directory: Path) -> Manifest:
    """Validate one manifest document; raises ValueError naming the problem."""
    problems = schemas.violations("manifest", doc)
    if problems:
        raise ValueError("; ".join(problems))
    _ductile_rules(doc, directory)
    commands = {c.name: c for c in map(_command, doc["commands"])}
    for command in commands.values():
        for key in ("input_schema", "output_schema"):
            schema = getattr(command, key)
            if schema:
                try:
                    jsonschema.validators.validator_for(schema).check_schema(schema)
                except jsonschema.SchemaError as exc:
                    raise ValueError(f"commands.{command.name}.{key}: {exc.message}") from exc
    fact_outputs = tuple(_fact_output(i, rule, commands) for i, rule in enumerate(doc.get("fact_outputs") or []))
    protocol = doc["protocol"]
    return Manifest(
        name=doc["name"],
        version=str(doc.get("version", "0.0.0")),
        protocol="python" if protocol == "python" else 2,
        entrypoint=doc["entrypoint"],
        directory=directory,
        description=doc.get("description"),
        concurrency_safe=bool(doc.get("concurrency_safe", True)),
        config_keys=doc.get("config_keys") or {},
        commands=commands,
        fact_outputs=fact_outputs,
        raw=doc,
    )


def _fact_output(index: int, rule: Mapping[str, Any], commands: Mapping[str, Command]) -> FactOutput:
    """One `fact_outputs` rule, checked as Ductile's `validateManifest` does (the shape is in the schema)."""
    command = rule["when"]["command"]
    if command not in commands:
        raise ValueError(f"fact_outputs[{index}].when.command {command!r} is not a declared command")
    return FactOutput(
        command=command,
        fact_type=rule["fact_type"],
        source=rule.get("from", "state_updates"),
        compatibility_view=rule.get("compatibility_view") or "",
    )


def scan(roots: Iterable[Path], configs: Mapping[str, Mapping[str, Any] | None] | None = None) -> Catalog:
    """Every valid plugin under `roots` (first of a name wins) and every broken manifest. With `configs`
    (plugin name → its `config`, None for a disabled plugin), a plugin lacking a required config key is
    refused like a broken manifest."""
    found: dict[str, Manifest] = {}
    broken: list[ManifestError] = []
    for root in roots:
        if not root.is_dir():
            continue
        for manifest_path in sorted(root.glob("*/manifest.yaml")):
            try:
                if manifest_path.parent.stat().st_mode & stat.S_IWOTH:
                    raise ValueError(f"plugin directory {manifest_path.parent} is world-writable")
                doc = yamlio.load_plain(manifest_path.read_text())  # YAML 1.2, as Ductile reads manifests
                manifest = parse_manifest(doc, manifest_path.parent)
            except (OSError, yamlio.YAMLError, ValueError, KeyError, TypeError) as exc:
                broken.append(ManifestError(str(manifest_path), str(exc)))
                log.warning("manifest_invalid", path=str(manifest_path), error=str(exc))
                continue
            if manifest.name in found:
                log.info("plugin_shadowed", plugin=manifest.name, path=str(manifest_path))
                continue
            found[manifest.name] = manifest
    configured = [] if configs is None else [(name, m, configs.get(name, {})) for name, m in found.items()]
    for name, manifest, config in configured:
        if config is None:
            continue  # disabled: never run, so not checked (Ductile does not validate disabled plugins)
        missing = manifest.missing_config(config)
        if missing:
            error = f"plugin {name!r}: config_keys.required key(s) missing from plugins.{name}.config: " + ", ".join(
                missing
            )
            broken.append(ManifestError(str(manifest.path), error))
            log.warning("plugin_config_missing", plugin=name, path=str(manifest.path), missing=missing)
            del found[name]
    return Catalog(plugins=found, errors=tuple(broken))


def signature(catalog: Catalog) -> str:
    """A hash of what the catalog holds (each plugin's directory and manifest, each broken manifest): two
    processes that scanned the same plugin directories agree on it, and adding a plugin changes it."""
    doc = {
        "plugins": {name: [str(m.directory), m.raw] for name, m in catalog.plugins.items()},
        "errors": [[e.path, e.error] for e in catalog.errors],
    }
    return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()

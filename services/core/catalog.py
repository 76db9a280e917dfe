"""Plugin catalog: scans `plugin_roots` for `manifest.yaml` (YAML 1.2), validates each against
`schemas/manifest.json` and answers "which plugins and commands exist". A broken manifest
is skipped and kept as an error for /healthz, never a crash.
"""

from __future__ import annotations

import dataclasses
import hashlib
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
    raw: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def is_python(self) -> bool:
        return self.protocol == "python"


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


def _command(entry: str | Mapping[str, Any]) -> Command:
    if isinstance(entry, str):
        return Command(name=entry)
    return Command(
        name=entry["name"],
        type=entry.get("type", "write"),
        description=entry.get("description"),
        input_schema=entry.get("input_schema"),
        output_schema=entry.get("output_schema"),
        idempotent=bool(entry.get("idempotent", False)),
        retry_safe=bool(entry.get("retry_safe", True)),
        values=entry.get("values"),
    )


def parse_manifest(doc: Any, directory: Path) -> Manifest:
    """Validate one manifest document; raises ValueError naming the problem."""
    problems = schemas.violations("manifest", doc)
    if problems:
        raise ValueError("; ".join(problems))
    commands = {c.name: c for c in map(_command, doc["commands"])}
    for command in commands.values():
        for key in ("input_schema", "output_schema"):
            schema = getattr(command, key)
            if schema:
                try:
                    jsonschema.validators.validator_for(schema).check_schema(schema)
                except jsonschema.SchemaError as exc:
                    raise ValueError(f"commands.{command.name}.{key}: {exc.message}") from exc
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
        raw=doc,
    )


def scan(roots: Iterable[Path]) -> Catalog:
    """Every valid plugin under `roots` (first of a name wins) and every broken manifest."""
    found: dict[str, Manifest] = {}
    broken: list[ManifestError] = []
    for root in roots:
        if not root.is_dir():
            continue
        for manifest_path in sorted(root.glob("*/manifest.yaml")):
            try:
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
    return Catalog(plugins=found, errors=tuple(broken))


def signature(catalog: Catalog) -> str:
    """A hash of what the catalog holds (each plugin's directory and manifest, each broken manifest): two
    processes that scanned the same plugin directories agree on it, and adding a plugin changes it."""
    doc = {"plugins": {name: [str(m.directory), m.raw] for name, m in catalog.plugins.items()},
           "errors": [[e.path, e.error] for e in catalog.errors]}
    return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()

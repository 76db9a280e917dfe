"""Ductile plugin manifests (conformance doc §6.1, §6.2): every real manifest loads, compact
schemas are expanded as `expandSchema` does, `fact_outputs` is checked as `validateManifest`
does, and a plugin missing a `config_keys.required` key is refused at load, by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from services.core import catalog
from tests.conformance.ductile.support import FIXTURE_MANIFESTS, PLUGINS

#: what the fixtures' required config keys need to be supplied (sqlite_change needs db_path, query, event_type)
FIXTURE_CONFIGS = {"sqlite_change": {"db_path": "/tmp/x.db", "query": "select 1", "event_type": "sqlite.changed"}}


def test_every_fixture_manifest_loads() -> None:
    names = sorted(p.parent.name for p in FIXTURE_MANIFESTS.glob("*/manifest.yaml"))
    assert len(names) == 5
    found = catalog.scan([FIXTURE_MANIFESTS], FIXTURE_CONFIGS)
    assert found.errors == ()
    assert sorted(found.plugins) == sorted(
        yaml.safe_load((FIXTURE_MANIFESTS / n / "manifest.yaml").read_text())["name"] for n in names
    )
    for manifest in found.plugins.values():
        for command in manifest.commands.values():  # every schema the API will use is a full JSON Schema
            for schema in (command.input_schema, command.output_schema):
                assert schema is None or schema.get("type") == "object", (manifest.name, command.name, schema)
    assert found.plugins["jina-reader"].facts_for("poll")[0].fact_type == "jina-reader.snapshot"


def test_compact_input_schema_is_expanded_like_expand_schema() -> None:
    birda = catalog.scan([FIXTURE_MANIFESTS], FIXTURE_CONFIGS).plugins["birda"].commands["handle"]
    assert birda.input_schema == {
        "type": "object",
        "properties": {
            "wav_path": {"type": "string"},
            "lat": {"type": "number"},
            "lon": {"type": "number"},
            "min_conf": {"type": "number"},
            "week": {"type": "integer"},
        },
    }
    assert birda.output_schema is not None and birda.output_schema["properties"]["detections"] == {"type": "array"}


@pytest.mark.parametrize(
    ("schema", "expanded"),
    [
        (None, None),
        (
            {"message": "string", "count": "integer"},
            {"type": "object", "properties": {"message": {"type": "string"}, "count": {"type": "integer"}}},
        ),
        # a map with `type` is a full JSON Schema, kept as it is
        (
            {"type": "object", "properties": {"a": {"type": "string"}}},
            {"type": "object", "properties": {"a": {"type": "string"}}},
        ),
        # non-string values are kept; nested maps are not expanded; no `required` is added
        (
            {"tags": {"type": "array"}, "meta": {"k": "string"}},
            {"type": "object", "properties": {"tags": {"type": "array"}, "meta": {"k": "string"}}},
        ),
        ("string", "string"),
        ({}, {}),  # any object (ductile-plugins.md), as before
    ],
)
def test_expand_schema_rules(schema: Any, expanded: Any) -> None:
    assert catalog.expand_schema(schema) == expanded


def _write(root: Path, name: str, extra: str) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "manifest.yaml").write_text(
        f"name: {name}\nprotocol: 2\nentrypoint: run.sh\ncommands:\n  - {{name: poll, type: write}}\n{extra}"
    )


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("fact_outputs:\n  - {when: {command: nope}, from: state_updates, fact_type: t}\n", "not a declared command"),
        ("fact_outputs:\n  - {when: {command: poll}, from: result, fact_type: t}\n", "from"),
        ("fact_outputs:\n  - {when: {command: poll}, from: state_updates}\n", "fact_type"),
        ("fact_outputs:\n  - {when: {command: poll}, fact_type: t, compatibility_view: merge}\n", "compatibility_view"),
    ],
)
def test_invalid_fact_outputs_refuse_the_manifest(tmp_path: Path, extra: str, expected: str) -> None:
    _write(tmp_path, "bad", extra)
    found = catalog.scan([tmp_path])
    assert "bad" not in found.plugins and len(found.errors) == 1
    assert expected in found.errors[0].error


def test_missing_required_config_key_refuses_only_that_plugin() -> None:
    found = catalog.scan([PLUGINS], {"mimic": {}})
    assert "needs_config" not in found.plugins and "mimic" in found.plugins
    (error,) = found.errors
    assert error.path.endswith("needs_config/manifest.yaml")
    assert "needs_config" in error.error and "endpoint" in error.error and "config_keys.required" in error.error
    # supplied: loads; null counts as missing; a disabled plugin is not checked (it never runs)
    assert "needs_config" in catalog.scan([PLUGINS], {"needs_config": {"endpoint": "http://x"}}).plugins
    assert "needs_config" not in catalog.scan([PLUGINS], {"needs_config": {"endpoint": None}}).plugins
    assert "needs_config" in catalog.scan([PLUGINS], {"needs_config": None}).plugins

"""Manifest validation (shared/spec/ductile-conformance.md §6.1, Ductile's `validateManifest` and
`loadPlugin`): what Ductile refuses, `catalog.scan` refuses too, as a broken manifest named by path
(never a crash, the other plugins still load); what Ductile accepts loads. Headrace's own leniencies
(no `manifest_spec`, a command without `type`) keep loading."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from services.core import catalog

GOOD = {
    "manifest_spec": "ductile.plugin",
    "manifest_version": 1,
    "name": "p",
    "version": "1.0.0",
    "protocol": 2,
    "entrypoint": "run.sh",
    "commands": "  - {name: poll, type: write}\n",
}


def write_plugin(root: Path, dirname: str, **fields: object) -> Path:
    doc = {**GOOD, **fields}
    commands = doc.pop("commands")
    plugin = root / dirname
    plugin.mkdir(parents=True)
    lines = [f"{k}: {v}" for k, v in doc.items() if v is not None]
    (plugin / "manifest.yaml").write_text("\n".join(lines) + "\ncommands:\n" + str(commands))
    run = plugin / "run.sh"
    run.write_text('#!/bin/sh\necho \'{"status":"ok","result":"ok"}\'\n')
    run.chmod(0o755)
    return plugin


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"manifest_spec": "other.plugin"}, "manifest_spec"),
        ({"manifest_version": 2}, "manifest_version"),
        ({"protocol": 1}, "protocol"),
        ({"name": None}, "name"),
        ({"entrypoint": "../elsewhere/run.sh"}, "entrypoint"),
        ({"entrypoint": "/bin/sh"}, "entrypoint"),
        ({"commands": "  - {name: poll, type: sometimes}\n"}, "commands"),
        ({"commands": "  []\n"}, "commands"),
    ],
)
def test_what_ductile_refuses_is_a_broken_manifest(tmp_path: Path, fields: dict[str, object], message: str) -> None:
    write_plugin(tmp_path, "bad", **fields)
    write_plugin(tmp_path, "fine", name="fine")
    found = catalog.scan([tmp_path])
    assert list(found.plugins) == ["fine"]
    (error,) = found.errors
    assert error.path.endswith("bad/manifest.yaml") and message in error.error, error


def test_an_entrypoint_symlink_out_of_the_plugin_is_refused(tmp_path: Path) -> None:
    plugin = write_plugin(tmp_path / "roots", "escape", entrypoint="link.sh")
    outside = tmp_path / "outside.sh"
    outside.write_text("#!/bin/sh\n")
    os.symlink(outside, plugin / "link.sh")
    found = catalog.scan([tmp_path / "roots"])
    assert not found.plugins and "outside the plugin directory" in found.errors[0].error


def test_a_world_writable_plugin_directory_is_refused(tmp_path: Path) -> None:
    plugin = write_plugin(tmp_path, "open")
    plugin.chmod(plugin.stat().st_mode | stat.S_IWOTH)
    found = catalog.scan([tmp_path])
    assert not found.plugins and "world-writable" in found.errors[0].error


def test_what_ductile_accepts_loads(tmp_path: Path) -> None:
    write_plugin(
        tmp_path,
        "a",
        name="a",
        manifest_version="1",
        protocol='"2"',
        concurrency_safe="false",
        commands="  - {name: poll, type: read, description: d, idempotent: true, retry_safe: false}\n"
        "  - {name: handle, type: write, input_schema: {url: string}}\n",
    )
    write_plugin(
        tmp_path, "b", name="b", manifest_spec=None, manifest_version=None, commands="  - {name: poll}\n"
    )  # Headrace's leniency: type defaults to write
    found = catalog.scan([tmp_path])
    assert found.errors == () and sorted(found.plugins) == ["a", "b"]
    a = found.plugins["a"]
    assert a.concurrency_safe is False and a.commands["poll"].type == "read"
    assert a.commands["handle"].input_schema == {"type": "object", "properties": {"url": {"type": "string"}}}
    assert found.plugins["b"].commands["poll"].type == "write"


def test_the_registry_key_is_the_manifest_name_and_the_first_root_wins(tmp_path: Path) -> None:
    write_plugin(tmp_path / "one", "dir-name", name="real-name", version="1.0.0")
    write_plugin(tmp_path / "two", "other-dir", name="real-name", version="2.0.0")
    found = catalog.scan([tmp_path / "one", tmp_path / "two"])
    assert list(found.plugins) == ["real-name"] and found.plugins["real-name"].version == "1.0.0"

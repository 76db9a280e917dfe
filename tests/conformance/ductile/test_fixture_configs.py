"""Every real Ductile config under shared/fixtures/ductile/configs/ loads: `headrace -c <file>
check-config` exits 0 (a process, as an operator runs it), each Ductile key without meaning here
named once in a warning line.

The fixtures are never edited. Per their README they lack what the repository's run scripts and
operators supply: plugin sources ("no code, scripts or plugin sources"), the include files "that
could not be read", the vault (`age.key` and `vault.age`, which Ductile's genesis creates before the
first boot; made here with pyrage, holding every `secret_ref`), and the config.yaml a run script writes
beside a bootstrap `api.yaml`. The tree is copied to a tmp dir and exactly those are added next to the
copies; the fixture files themselves load as they are.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from services.core import yamlio
from tests.support import vaults
from tests.support.stack import REPO

FIXTURES = Path("/work/shared/fixtures/ductile/configs")
if not FIXTURES.is_dir():  # pragma: no cover - the fixtures live beside the repository
    FIXTURES = REPO.parent / "shared" / "fixtures" / "ductile" / "configs"

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
MANIFEST = """manifest_spec: ductile.plugin
manifest_version: 1
name: {name}
version: 0.1.0
protocol: 2
entrypoint: run.sh
commands:
  - {{name: poll, type: write}}
  - {{name: handle, type: write}}
  - {{name: health, type: read}}
"""


def entry_points() -> list[Path]:
    """Every config a Ductile process is started with: the top-level files and each config/ directory."""
    tops = sorted(p.relative_to(FIXTURES) for p in FIXTURES.glob("*.yaml"))
    dirs = sorted(p.relative_to(FIXTURES) for p in FIXTURES.rglob("config") if p.is_dir())
    return [*tops, *dirs]


def supply(root: Path, entry: Path) -> tuple[Path, dict[str, str]]:
    """What the README says is missing next to one entry point: a config.yaml including the directory's
    files (bootstrap dirs), include files, plugin roots with a manifest per configured plugin, the vault
    the config names (holding every `secret_ref`) and an environment holding every `${VAR}` (and every
    `secret_ref` of a config without a vault)."""
    target = root / entry
    if target.is_dir() and not (target / "config.yaml").exists():
        names = sorted(p.name for p in target.glob("*.yaml"))
        roots = "plugin_roots: [plugins]\n" if (target / "plugins").is_dir() else ""
        (target / "config.yaml").write_text(roots + "include: [" + ", ".join(names) + "]\n")
    path = target / "config.yaml" if target.is_dir() else target
    env: dict[str, str] = {}
    refs: dict[str, str] = {}
    vault_files: dict[str, str] = {}
    plugins: set[str] = set()
    roots: list[Path] = []

    def walk(file: Path) -> None:
        text = file.read_text()
        for name in _VAR.findall("\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))):
            env[name] = f"value-of-{name}"
        doc = yamlio.load_plain(text) or {}
        for ref in re.findall(r"secret_ref:\s*([\w.-]+)", text):
            refs[ref] = f"secret-of-{ref}"
        vault_files.update({k: v for k, v in (doc.get("secrets") or {}).items() if k in ("age_key_file", "vault_file")})
        plugins.update((doc.get("plugins") or {}).keys())
        roots.extend((file.parent / r).resolve() for r in doc.get("plugin_roots") or [])
        for inc in doc.get("include") or []:
            sub = file.parent / inc
            if not sub.exists():
                sub.write_text("# supplied by the test: not in the fixture corpus\n")
            walk(sub)

    walk(path)
    if vault_files:  # relative to the root config's directory, as Ductile resolves them
        made = vaults.make(
            path.parent,
            key_name=vault_files.get("age_key_file", "age.key"),
            vault_name=vault_files.get("vault_file", "vault.age"),
            secrets={ref: vaults.secret(value) for ref, value in refs.items()},
        )
        assert made.vault.is_file()
    else:
        env.update(refs)
    for plugin_root in roots:
        plugin_root.mkdir(parents=True, exist_ok=True)
        for name in plugins:
            if not any((r / name / "manifest.yaml").exists() for r in roots):
                (plugin_root / name).mkdir()
                (plugin_root / name / "manifest.yaml").write_text(MANIFEST.format(name=name))
    return path, env


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ductile") / "configs"
    shutil.copytree(FIXTURES, root)
    for p in root.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return root


def check_config(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(REPO), **env}
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "-c", str(path), "check-config"],
        capture_output=True,
        text=True,
        env=full,
        timeout=60,
        cwd=str(REPO),
    )


def test_the_corpus_is_all_there() -> None:
    assert len(entry_points()) == 9, entry_points()  # 2 top-level files, config/, 6 docker fixtures


@pytest.mark.parametrize("entry", entry_points(), ids=str)
def test_every_fixture_config_loads(corpus: Path, entry: Path) -> None:
    path, env = supply(corpus, entry)
    done = check_config(path, env)
    assert done.returncode == 0, done.stderr
    assert ": ok (" in done.stdout
    warnings = [line for line in done.stderr.splitlines() if line.startswith("headrace: warning: ")]
    assert len(warnings) == len(set(warnings)), "a key is warned about once"
    assert all(line.startswith("headrace: warning: ") for line in done.stderr.splitlines()), done.stderr


def test_keys_without_effect_are_named_once_each(corpus: Path) -> None:
    path, env = supply(corpus, Path("config.yaml"))
    done = check_config(path, env)
    assert done.returncode == 0, done.stderr
    named = [line.removeprefix("headrace: warning: ").split(":", 1)[0] for line in done.stderr.splitlines()]
    for key in ("service.tick_interval", "service.log_format", "state", "routes"):
        assert named.count(key) == 1, (key, done.stderr)


def test_the_fixture_files_are_unchanged_by_the_test(corpus: Path) -> None:
    for original in FIXTURES.rglob("*.yaml"):
        assert (corpus / original.relative_to(FIXTURES)).read_bytes() == original.read_bytes()

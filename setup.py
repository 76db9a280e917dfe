"""Build step of the headrace wheel (all other packaging settings are in pyproject.toml).

The code reads schemas/, plugins/ and config.example.yaml, which stay at the top of the repo next
to services/. For a wheel, build_py copies them into the package as `services/_bundled/<name>`,
where services/core/resources.py finds them with importlib.resources once installed. An editable
install skips the copy: it reads them from the checkout.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

#: what the wheel carries from the top of the repo (services/core/resources.py BUNDLED)
BUNDLED = ("schemas", "plugins", "config.example.yaml")


def _files(entry: Path) -> list[Path]:
    """The files of `entry`, without the byte code running the in-process plugins leaves in the checkout."""
    found = [entry] if entry.is_file() else sorted(p for p in entry.rglob("*") if p.is_file())
    return [p for p in found if "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")]


class BuildPyWithBundled(build_py):
    """build_py, plus the top-level data files copied under services/_bundled/ (modes kept: run.py is executable)."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "services" / "_bundled"
        for name in BUNDLED:
            for source in _files(Path(name)):
                destination = target / source
                self.mkpath(str(destination.parent))
                self.copy_file(str(source), str(destination), preserve_mode=True)


setup(cmdclass={"build_py": BuildPyWithBundled})

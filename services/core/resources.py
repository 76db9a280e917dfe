"""Where the files the code reads live, installed or not: the JSON Schemas (`schemas/`), the bundled
plugins (`plugins/`), the example config (`config.example.yaml`), the projector's migrations and SQL.

In the repo, schemas/, plugins/ and config.example.yaml sit at the top, next to services/. A wheel
carries them as package data under `services/_bundled/` (setup.py's build step copies them there),
so `pip install .` works without the checkout. Each is found with importlib.resources: in the
package when it is there (an installed wheel), else in the checkout the package was imported from
(running from the repo, or an editable install). The migrations and the SQL live inside the
package, so importlib.resources finds them the same way everywhere.

Paths, not Traversables, are handed out: plugins are executed from their directory and the catalog
checks its permissions, which needs the files on disk (a zipped install is refused).
"""

from __future__ import annotations

import functools
import importlib.resources
from importlib.resources.abc import Traversable
from pathlib import Path

from services.core import errors

#: the package-data directory a wheel keeps the top-level repo files in (setup.py names it too)
BUNDLED_DIR = "_bundled"
#: the top-level repo entries a wheel carries (setup.py copies exactly these)
BUNDLED = ("schemas", "plugins", "config.example.yaml")


def _on_disk(resource: Traversable) -> Path:
    if not isinstance(resource, Path):
        raise errors.ConfigError(f"headrace must be installed unzipped: {resource} is not a file on disk")
    return resource


@functools.cache
def bundled(name: str) -> Path:
    """`schemas`, `plugins` or `config.example.yaml`: the wheel's copy, else the checkout's."""
    if name not in BUNDLED:
        raise ValueError(f"{name!r} is not bundled (one of {', '.join(BUNDLED)})")
    package = importlib.resources.files("services")
    packaged = package / BUNDLED_DIR / name
    if packaged.is_dir() or packaged.is_file():
        return _on_disk(packaged)
    return _on_disk(package).parent / name  # the checkout: next to services/


def migrations() -> list[Traversable]:
    """The projector's migrations (services/projector/migrations/*.sql), in the order they apply."""
    folder = importlib.resources.files("services.projector") / "migrations"
    return sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)


def projector_sql(name: str) -> str:
    """The text of services/projector/sql/<name> (e.g. queries.sql)."""
    return (importlib.resources.files("services.projector.sql") / name).read_text(encoding="utf-8")

"""Which Postgres database `headrace up` uses: one per state directory, named after it (so two
instances with different state directories never share read models), unless DATABASE_URL names one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.core import embedded

IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")


def test_one_database_per_state_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "one" / ".state", tmp_path / "two" / ".state"
    assert embedded.database_name(first) != embedded.database_name(second)
    assert embedded.database_name(first) == embedded.database_name(tmp_path / "one" / ".state")
    monkeypatch.chdir(tmp_path / "..")
    relative = Path(tmp_path.name) / "one" / ".state"
    assert embedded.database_name(relative) == embedded.database_name(first)  # the absolute path counts
    assert re.fullmatch(r"headrace_state_[0-9a-f]{8}", embedded.database_name(first))


@pytest.mark.parametrize("name", ["My State.dir", "ÜBER-state", "...", "x" * 300, "state-2024_01", "9lives"])
def test_the_name_is_a_postgres_identifier(tmp_path: Path, name: str) -> None:
    database = embedded.database_name(tmp_path / name)
    assert IDENTIFIER.match(database) and len(database.encode()) <= 63, database
    assert database.startswith("headrace_")


async def test_an_explicit_database_url_is_used_as_is(tmp_path: Path) -> None:
    given = "postgresql://someone:secret@127.0.0.1:1/their_db?sslmode=disable"  # nothing listens: never connected
    assert await embedded.resolve_postgres(given, tmp_path / ".state") == (given, None)


def test_the_local_servers_tried_can_be_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(embedded.LOCAL_POSTGRES_ENV, raising=False)
    assert embedded.local_postgres_urls() == embedded.LOCAL_POSTGRES_URLS
    monkeypatch.setenv(embedded.LOCAL_POSTGRES_ENV, "postgresql://a@h:1/postgres, postgresql://b@h:2/postgres")
    assert embedded.local_postgres_urls() == ("postgresql://a@h:1/postgres", "postgresql://b@h:2/postgres")
    monkeypatch.setenv(embedded.LOCAL_POSTGRES_ENV, "")
    assert embedded.local_postgres_urls() == ()


def test_the_printed_url_hides_the_password() -> None:
    assert embedded.display_url("postgresql://u:s3cr@t@db:5432/x") == "postgresql://u:***@db:5432/x"
    assert embedded.display_url("postgresql://postgres@127.0.0.1:5432/x") == "postgresql://postgres@127.0.0.1:5432/x"
    assert embedded.display_url("postgresql://db/x?user=u&password=pw&sslmode=require") == (
        "postgresql://db/x?user=u&password=***&sslmode=require"
    )

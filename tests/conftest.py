"""Session-wide real infrastructure (nats-server from the wheel, Postgres) and per-test isolation."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.support import infra, stack, testdbs
from tests.support.fake_llm import FakeLLM

#: the cluster test (tests/cluster: a dozen processes, minutes) runs on its own: `make test-cluster`
collect_ignore = [] if os.environ.get("HEADRACE_TEST_CLUSTER") == "1" else ["cluster"]

for _key in [k for k in os.environ if k.startswith("HEADRACE_")]:
    del os.environ[_key]
os.environ.pop("NATS_URL", None)
# pytest-xdist's workers set COLUMNS/LINES to 80x24, which the CLI under test would take for a user's terminal
os.environ.pop("COLUMNS", None)
os.environ.pop("LINES", None)

#: the shared-server sessions whose databases pytest_sessionfinish drops
_TO_DROP: list[infra.Postgres] = []


async def _sweep() -> list[str]:
    url = await infra.shared_admin_url()
    return await testdbs.sweep_leftovers(url) if url else []


def pytest_sessionstart(session: pytest.Session) -> None:
    """Drop what crashed sessions on this machine left behind (testdbs.sweep_leftovers says when)."""
    with contextlib.suppress(OSError, asyncpg.PostgresError):
        asyncio.run(_sweep())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Drop this session's databases here, outside every test's timeout, several at a time."""
    for pg in _TO_DROP:
        with contextlib.suppress(OSError, asyncpg.PostgresError):  # left for the sweep of a later session
            asyncio.run(pg.drop_all())
    _TO_DROP.clear()


@pytest.fixture(scope="session")
async def nats_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[infra.NatsServer]:
    server = infra.NatsServer(tmp_path_factory.mktemp("nats"))
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="session")
async def postgres(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[infra.Postgres]:
    pg = await infra.Postgres.connect(tmp_path_factory.mktemp("pg"))
    if pg.cluster is None:
        _TO_DROP.append(pg)
    await pg.create_template()
    yield pg
    await pg.close()


@pytest.fixture
async def nats_url(nats_server: infra.NatsServer) -> str:
    """The session nats-server with every stream, KV bucket and object store deleted."""
    await infra.reset_jetstream(nats_server.url)
    return nats_server.url


@pytest.fixture
async def database_url(postgres: infra.Postgres) -> str:
    """A fresh database (migrated, from the session template) for this test."""
    return await postgres.new_database()


@pytest.fixture
def make_config(tmp_path: Path, nats_url: str, database_url: str) -> Callable[..., Any]:
    """Factory: write a config file for this test and load it; returns the Config (its .path is the file)."""
    counter = iter(range(1000))

    def make(**kwargs: Any) -> Any:
        doc = stack.config_doc(**kwargs)
        return stack.write_config(
            tmp_path / f"config-{next(counter)}.yaml", doc, nats_url=nats_url, database_url=database_url
        )

    return make


@pytest.fixture
async def start_stack() -> AsyncIterator[Callable[..., Any]]:
    """Factory: start the four services in-process for a config; stopped after the test."""
    started: list[stack.Stack] = []

    async def start(config: Any) -> stack.Stack:
        s = await stack.Stack(config).start()
        started.append(s)
        return s

    yield start
    for s in reversed(started):
        await s.stop()


@pytest.fixture
async def hr(make_config: Callable[..., Any], start_stack: Callable[..., Any]) -> stack.Stack:
    """The default stack (echo and echo_py enabled)."""
    return await start_stack(make_config())


@pytest.fixture
def client(hr: stack.Stack) -> stack.Client:
    assert hr.client is not None
    return hr.client


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLM]:
    """A fake OpenAI-compatible server over real HTTP (tests/support/fake_llm.py), stopped after the test."""
    server = await FakeLLM().start()
    yield server
    await server.stop()

"""Property: whatever the API or ingest accepts, the projector can always project and `rebuild`
can always replay.

Generated JSON documents (unicode with NUL and lone surrogates, integers past 64 bits, NaN and
Infinity, nesting around the depth limit, empty, long and odd keys) go over real HTTP to a real
stack and, the same documents, onto NATS `ingest.<type>` (where they start a pipeline). For each: the answer is 2xx or a JSON
4xx (never 5xx); an accepted job reaches a final status and its row is projected; each ingested
message ends as `ingest.accepted` or `ingest.rejected`; the projector's checkpoint reaches the end
of the log with nothing recorded as unprojectable. At the end a real rebuild equals the live rows.

One stack serves every example: the examples run on the session event loop (the test is sync;
its body hands each example to the loop with `run_until_complete`).
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import asyncpg
import nats
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.core import subjects
from services.projector import rebuild
from tests.support.infra import wait_until
from tests.support.stack import FINAL, Stack

MAX_EXAMPLES = 120
ONE_ATTEMPT = {"retry": {"max_attempts": 1}, "circuit_breaker": {"threshold": 100_000}}
TARGETS = [("echo_py", "handle"), ("echo_py", "poll"), ("echo", "poll")]
INGEST_TYPE = "prop.value"
#: an ingested document also starts a pipeline whose step renders templates over it
PIPELINES = [
    {
        "name": "on_prop",
        "on": INGEST_TYPE,
        "steps": [{"id": "copy", "uses": "echo_py", "with": {"whole": "{payload}", "note": "a is {payload.a}"}}],
    }
]
#: a pipeline root ends succeeded or failed (naming the step)
ROOT_FINAL = frozenset({*FINAL, "failed"})

TABLES = {
    "jobs": "SELECT * FROM jobs ORDER BY job_id",
    "job_logs": "SELECT log_id, job_id, attempt, plugin, command, status, submitted_by, created_at, started_at, "
    "completed_at, last_error, stderr, result, logs, search::text, last_seq FROM job_logs ORDER BY log_id",
    "traces": "SELECT * FROM traces ORDER BY id",
    "ingest_rejections": "SELECT * FROM ingest_rejections ORDER BY id",
    "projection_failures": "SELECT * FROM projection_failures ORDER BY seq",
    "checkpoint": "SELECT name, stream_seq FROM checkpoint ORDER BY name",
}

# --- the documents ------------------------------------------------------------

#: mostly ordinary text, some odd strings Postgres cannot hold (NUL) or that look alike (U+FFFD)
text = st.text(max_size=20) | st.sampled_from(["", "\x00", "a\x00b", "\ufffd", "a\ufffdb", "\uffff", "😀", "k" * 3000])
#: lone surrogates: JSON can write them (\ud800), a parser must refuse them; rarer, or few bodies would pass
surrogates = st.sampled_from(["\ud800", "x\udfffy"])
numbers = (
    st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.sampled_from([2**64, -(2**63) - 1, 2**70, 10**30])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([math.nan, math.inf, -math.inf, 1.5e300, -0.0, 5e-324])
)
leaves = st.none() | st.booleans() | numbers | text | text | surrogates
documents = st.recursive(
    leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text | surrogates, children, max_size=4),
    max_leaves=12,
)


@st.composite
def deep(draw: st.DrawFn) -> Any:
    """A document wrapped in objects or arrays to a depth around the limit (64 levels)."""
    value = draw(documents)
    for _ in range(draw(st.integers(min_value=0, max_value=70) | st.integers(min_value=60, max_value=66))):
        value = {draw(text): value} if draw(st.booleans()) else [value]
    return value


#: mostly objects (a payload must be one), sometimes anything
payloads = st.dictionaries(text, documents | deep(), max_size=4) | st.dictionaries(text, deep(), max_size=2) | documents


def encode(value: Any, *, ascii_only: bool) -> bytes:
    """JSON text as a client might send it: NaN/Infinity literals, lone surrogates as \\u escapes
    (or, not ASCII-only, as the invalid UTF-8 a sloppy client writes)."""
    raw = json.dumps(value, ensure_ascii=ascii_only, allow_nan=True)
    return raw.encode("utf-8", "surrogatepass")


# --- the stack ------------------------------------------------------------------


@pytest.fixture
async def session_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


async def read_models(database_url: str) -> dict[str, list[tuple[Any, ...]]]:
    conn = await asyncpg.connect(database_url, server_settings={"search_path": "headrace"})
    try:
        return {name: [tuple(r) for r in await conn.fetch(sql)] for name, sql in TABLES.items()}
    finally:
        await conn.close()


class Run:
    """What the examples did, for the checks at the end."""

    def __init__(self, s: Stack, nc: Any, database_url: str) -> None:
        self.s = s
        self.nc = nc
        self.database_url = database_url
        self.jobs: list[str] = []
        self.ingested: list[int] = []
        self.answers: dict[int, int] = {}

    async def example(self, target: tuple[str, str], payload: Any, ascii_only: bool, wrap: bool) -> None:
        client = self.s.client
        assert client is not None
        body = encode({"payload": payload} if wrap else payload, ascii_only=ascii_only)
        status, answer = await client.post(
            f"/plugin/{target[0]}/{target[1]}", data=body, headers={"Content-Type": "application/json"}
        )
        self.answers[status] = self.answers.get(status, 0) + 1
        assert status < 500, (status, answer)
        if status >= 400:
            assert isinstance(answer, dict) and answer.get("error") and answer.get("code"), (status, answer)
        else:
            assert status == 202, (status, answer)
            job = await client.wait_job(answer["job_id"], FINAL, timeout_s=20)
            self.jobs.append(job["job_id"])
        ack = await self.nc.jetstream().publish(
            f"ingest.{INGEST_TYPE}", encode({"type": INGEST_TYPE, "payload": payload}, ascii_only=ascii_only)
        )
        self.ingested.append(ack.seq)
        for root in await self.ingest_decided(ack.seq):
            job = await client.wait_job(root, ROOT_FINAL, timeout_s=20, may_not_exist_yet=True)
            self.jobs.append(job["job_id"])
        await self.s.caught_up()
        models = await read_models(self.database_url)
        assert models["projection_failures"] == []
        if status == 202:
            assert answer["job_id"] in {row[0] for row in models["jobs"]}

    async def ingest_decided(self, seq: int) -> list[str]:
        """Wait until ingest message `seq` is accepted or rejected; the pipeline roots it started."""
        assert self.s.api.bus is not None
        bus = self.s.api.bus

        async def decided() -> tuple[list[str]] | None:  # a tuple: truthy even without roots
            for kind in ("accepted", "rejected"):
                found = await bus.history(subjects.EVENTS, subjects.ingest_event(kind), limit=100_000)
                for _, env in found:
                    if env.id == f"ingest:{seq}:{kind}":
                        return (list(env.data.get("pipeline_roots") or []),)
            return None

        (roots,) = await wait_until(decided, timeout_s=20, what=f"ingest message {seq} accepted or rejected")
        return roots


def test_whatever_is_accepted_is_projected_and_rebuilt(
    make_config: Any, start_stack: Any, database_url: str, session_loop: asyncio.AbstractEventLoop
) -> None:
    plugins = {"echo": ONE_ATTEMPT, "echo_py": ONE_ATTEMPT}
    config = make_config(plugins=plugins, pipelines=PIPELINES)
    s: Stack = session_loop.run_until_complete(start_stack(config))
    assert s.config.nats_url
    nc = session_loop.run_until_complete(nats.connect(s.config.nats_url))
    run = Run(s, nc, database_url)

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    @given(
        target=st.sampled_from(TARGETS),
        payload=payloads,
        ascii_only=st.booleans(),
        wrap=st.sampled_from([True, True, True, False]),
    )
    def examples(target: tuple[str, str], payload: Any, ascii_only: bool, wrap: bool) -> None:
        session_loop.run_until_complete(run.example(target, payload, ascii_only, wrap))

    try:
        examples()
        live = session_loop.run_until_complete(read_models(database_url))
        assert len(run.jobs) > 0 and 400 in run.answers, run.answers  # both sides of the limits were exercised
        assert live["projection_failures"] == []
        last = session_loop.run_until_complete(s.caught_up())
        assert live["checkpoint"] == [("events", last)]
        assert s.api.bus is not None
        stats = session_loop.run_until_complete(rebuild.rebuild(s.api.bus, database_url))
        assert stats["checkpoint"] == last
        assert session_loop.run_until_complete(read_models(database_url)) == live
    finally:
        session_loop.run_until_complete(nc.close())


def test_the_encoder_of_the_examples_writes_what_the_transport_carries() -> None:
    """The examples really contain NUL, lone surrogates, NaN and huge integers as a client writes them."""
    raw = encode({"a\x00": ["\ud800", math.nan, 2**70]}, ascii_only=True)
    assert raw == b'{"a\\u0000": ["\\ud800", NaN, 1180591620717411303424]}'
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(encode("\ud800", ascii_only=False))

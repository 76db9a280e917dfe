"""Contract fuzzing: schemathesis over the OpenAPI documents the API serves (`/openapi.json`, every
`/plugin/{name}/openapi.json`, and the whole gateway's `/api/openapi.json`, both dialects, but for the
streams `NOT_FUZZED` lists) against the real stack, with every check on (the response time capped at
5 s; the two checks `NOT_CHECKED` turns off for one operation each say why) and 0 failures, server
errors included. Bounded: a fixed number of examples per operation, deterministic, no cache of earlier
runs (its time is the suite's; a speed target would belong in bench/).

It runs schemathesis's engine from Python (`schemathesis.openapi.from_url` + `engine.from_schema`),
i.e. every phase the CLI runs: examples, coverage (boundary values, missing and wrong-typed fields,
undeclared methods, requests without auth), fuzzing (positive and negative data) and stateful.
`case.call_and_validate` over hypothesis strategies covers only the fuzzing phase and misses the
checks that need coverage-phase cases: it passed while the 405 answers lacked their `Allow`
header, which the engine's `unsupported_method` check caught. schemathesis's pytest plugin is not
used; the test is a plain pytest-asyncio test, so `filterwarnings = error` applies unchanged.

The stack runs on the test's event loop and schemathesis calls the API synchronously (requests),
so each run goes to a worker thread while the loop serves it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import schemathesis
from schemathesis.engine import Status, StopReason, events, from_schema

from tests.support.stack import ADMIN, REPO, Stack

#: a plugin with strict input schemas (required fields, enums, bounds, no extra keys)
FUZZ_PLUGINS = Path(__file__).parent / "plugins"
MAX_EXAMPLES = 8
#: the whole gateway's document (both dialects, every route mounted): fewer examples per operation, its
#: ~60 operations would otherwise take most of the budget
GATEWAY = "/api/openapi.json"
GATEWAY_EXAMPLES = 3
#: at least this many checks on it (every operation run, not just loaded)
GATEWAY_CHECKS = 10_000
#: operations of the gateway's document left out of its run, and why
NOT_FUZZED = {
    r"^/events$": "a server-sent event stream: the response never ends",
    r"^/ws/": "WebSockets (GET with Upgrade): not request and response",
    r"^/api/logs/containers": "Laddr's container logs answer 503 by design (no Docker here)",
}
#: checks turned off for one operation of the gateway's document, and why
NOT_CHECKED = {
    # it also matches POST /plugin/{plugin}/{command} (command "openapi.json"), as in Ductile: its 405
    # rightly allows POST, which the GET-only path item cannot say
    ("/plugin/{name}/openapi.json", "allow_header_conformance"),
    # the payload a command takes is its own input_schema, which the generic row cannot know: each
    # command's own path in /openapi.json says it, and that document is fuzzed with every check above
    ("/plugin/{plugin}/{command}", "positive_data_acceptance"),
}


def config(path: str) -> schemathesis.Config:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    operations: list[dict[str, Any]] = []
    if path == GATEWAY:
        # the Laddr routes read X-API-Key first: a generated one must not stand in for the token
        headers["X-API-Key"] = ADMIN
        operations += [{"include-path": where, "checks": {check: {"enabled": False}}} for where, check in NOT_CHECKED]
    return schemathesis.Config.from_dict(
        {
            "headers": headers,
            "checks": {"enabled": True, "max_response_time": 5.0},
            "generation": {
                "mode": "all",
                "max-examples": GATEWAY_EXAMPLES if path == GATEWAY else MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",
            },
            "seed": 1,
            "workers": 1,
            # hermetic: no replay of an earlier run's failures from a .schemathesis/ cache in the working directory
            "cache": {"enabled": False},
            **({"operations": operations} if operations else {}),
        }
    )


def load(base_url: str, path: str) -> Any:
    schema: Any = schemathesis.openapi.from_url(base_url + path, config=config(path))
    schema.config.update(base_url=base_url)
    if path == GATEWAY:
        schema = schema.exclude(path_regex="|".join(NOT_FUZZED))
    return schema


def fuzz(base_url: str, path: str) -> tuple[list[str], int]:
    """(failures, checks run) of every phase over one document."""
    schema = load(base_url, path)
    failures: list[str] = []
    checks = 0
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished | events.FuzzScenarioFinished):
            for nodes in event.recorder.checks.values():
                for node in nodes:
                    checks += 1
                    if node.status != Status.SUCCESS:
                        info = node.failure_info
                        detail = f"{info.failure.title}: {info.failure.message}\n{info.code_sample}" if info else ""
                        failures.append(f"{path} {event.recorder.label}: {node.name} {node.status.value}: {detail}")
        elif isinstance(event, events.NonFatalError):
            failures.append(f"{path} {event.label}: error: {event.value!r}")
        elif isinstance(event, events.FatalError):
            failures.append(f"{path}: fatal error: {event.exception!r}")
        elif isinstance(event, events.EngineFinished) and event.stop_reason != StopReason.COMPLETED:
            failures.append(f"{path}: the run stopped early ({event.stop_reason.value})")
    return failures, checks


async def test_every_openapi_document_holds_under_fuzzing(make_config: Any, start_stack: Any) -> None:
    s: Stack = await start_stack(
        make_config(
            plugin_roots=[str(REPO / "plugins"), str(FUZZ_PLUGINS)], plugins={"echo": {}, "echo_py": {}, "typed": {}}
        )
    )
    assert s.client is not None
    status, listed = await s.client.get("/plugins", token=None)
    assert status == 200
    documents = ["/openapi.json", *(f"/plugin/{p['name']}/openapi.json" for p in listed["plugins"]), GATEWAY]
    assert "/plugin/typed/openapi.json" in documents
    failures: list[str] = []
    checks: dict[str, int] = {}
    for path in documents:
        found, checks[path] = await asyncio.to_thread(fuzz, s.url, path)
        failures += found
    assert not failures, "\n\n".join(failures)
    assert sum(checks.values()) > 1000, checks  # the documents were really exercised
    assert checks[GATEWAY] > GATEWAY_CHECKS, checks
    print(f"fuzz checks per document: {checks}")

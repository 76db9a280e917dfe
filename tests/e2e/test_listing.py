"""GET /jobs and GET /job-logs over HTTP: filters, status aliases, newest-first order, totals,
limits, full-text search, time bounds, scopes, and a clear 400 naming every bad parameter."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.stack import TOKENS, Client, Stack

NATIVE = ["queued", "running", "succeeded", "failed", "timed_out", "dead", "skipped", "cancelled"]


def tok(name: str) -> str:
    return TOKENS[name][0]


def unique_word() -> str:
    """A word the 'simple' text-search parser keeps whole: letters only."""
    return "zq" + "".join(chr(ord("a") + int(c, 16) % 26) for c in uuid.uuid4().hex[:12])


async def settle(hr: Stack, client: Client, job_ids: list[str]) -> list[dict[str, Any]]:
    """Wait until every job is final and the projection has caught up with the event log."""
    done = [await client.wait_job(job_id) for job_id in job_ids]
    assert hr.api.bus is not None
    await hr.projector.wait_for(await hr.api.bus.stream_last_seq("EVENTS"))
    return done


async def test_jobs_filters_aliases_order_and_total(hr: Stack, client: Client) -> None:
    ids = [
        await client.submit("echo", "poll", {"message": "one"}),
        await client.submit("echo", "poll", {"message": "two"}),
        await client.submit("echo_py", "poll", {"message": "three"}),
        await client.submit("echo", "health"),
        await client.submit("echo", "poll", {"message": "four"}),
    ]
    await settle(hr, client, ids)

    status, body = await client.get("/jobs")
    assert status == 200, body
    assert body["total"] == 5 and body["total_is_estimate"] is False
    assert [j["job_id"] for j in body["jobs"]] == ids[::-1]  # newest first
    first = body["jobs"][0]
    assert set(first) == {
        "job_id",
        "plugin",
        "command",
        "status",
        "created_at",
        "started_at",
        "completed_at",
        "attempt",
    }
    assert first["status"] == "succeeded" and first["attempt"] == 1 and first["created_at"].endswith("Z")
    stamps = [j["created_at"] for j in body["jobs"]]
    assert stamps == sorted(stamps, reverse=True)

    status, body = await client.get("/jobs?plugin=echo")
    assert status == 200 and body["total"] == 4 and {j["plugin"] for j in body["jobs"]} == {"echo"}
    status, body = await client.get("/jobs?plugin=echo&command=poll")
    assert body["total"] == 3 and [j["job_id"] for j in body["jobs"]] == [ids[4], ids[1], ids[0]]
    status, body = await client.get("/jobs?command=health")
    assert body["total"] == 1 and body["jobs"][0]["job_id"] == ids[3]

    for value in ("succeeded", "ok"):
        status, body = await client.get(f"/jobs?status={value}")
        assert status == 200 and body["total"] == 5, value
    for value in ("pending", "queued", "error", "failed", "dead", "running"):
        status, body = await client.get(f"/jobs?status={value}&plugin=echo")
        assert status == 200 and body["total"] == 0 and body["jobs"] == [], value

    status, body = await client.get("/jobs?plugin=nope")
    assert status == 200 and body == {"jobs": [], "total": 0, "total_is_estimate": False}


async def test_jobs_limit_offset_and_unknown_params(hr: Stack, client: Client) -> None:
    ids = [await client.submit("echo_py", "poll", {"message": str(i)}) for i in range(4)]
    await settle(hr, client, ids)
    status, body = await client.get("/jobs?limit=2")
    assert status == 200 and body["total"] == 4 and [j["job_id"] for j in body["jobs"]] == [ids[3], ids[2]]
    status, body = await client.get("/jobs?limit=2&offset=2")
    assert [j["job_id"] for j in body["jobs"]] == [ids[1], ids[0]] and body["total"] == 4
    status, body = await client.get("/jobs?limit=200&offset=10")
    assert status == 200 and body["jobs"] == [] and body["total"] == 4
    status, body = await client.get("/jobs?limit=1")
    assert len(body["jobs"]) == 1
    status, body = await client.get("/jobs?sort=asc&frobnicate=1&page=3")
    assert status == 200 and body["total"] == 4 and [j["job_id"] for j in body["jobs"]] == ids[::-1]


@pytest.mark.parametrize("path", ["/jobs", "/job-logs"])
@pytest.mark.parametrize("limit", ["0", "-1", "abc", "1.5", "100000"])
async def test_bad_limit_is_400_naming_it(client: Client, path: str, limit: str) -> None:
    status, body = await client.get(f"{path}?limit={limit}")
    assert status == 400, body
    assert body["code"] == "bad_request" and body["parameter"] == "limit" and "'limit'" in body["error"]


async def test_limit_bounds_differ_per_endpoint(client: Client) -> None:
    # Ductile's bound on /jobs too (shared/spec/ductile-conformance.md §2.9: limit > 200 is a 400)
    assert (await client.get("/jobs?limit=200"))[0] == 200
    assert (await client.get("/jobs?limit=201"))[0] == 400
    assert (await client.get("/job-logs?limit=200"))[0] == 200
    status, body = await client.get("/job-logs?limit=201")
    assert status == 400 and body["parameter"] == "limit" and "200" in body["error"]
    status, body = await client.get("/jobs?offset=-3")
    assert status == 400 and body["parameter"] == "offset"


@pytest.mark.parametrize("path", ["/jobs", "/job-logs"])
async def test_bad_status_is_400_listing_allowed_values(client: Client, path: str) -> None:
    status, body = await client.get(f"{path}?status=finished")
    assert status == 400, body
    assert body["parameter"] == "status" and "status" in body["error"]
    assert set(NATIVE) <= set(body["allowed"]) and {"pending", "ok", "error"} <= set(body["allowed"])
    for value in NATIVE:
        assert value in body["error"]


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("admin", 200),
        ("jobs_ro", 200),
        ("jobs_rw", 200),
        ("plugin_rw", 403),
        ("plugin_ro", 403),
        ("events_ro", 403),
        (None, 401),
    ],
)
@pytest.mark.parametrize("path", ["/jobs", "/job-logs"])
async def test_listing_scopes(client: Client, path: str, token: str | None, expected: int) -> None:
    status, body = await client.get(path, token=tok(token) if token else None)
    assert status == expected, body
    if expected == 403:
        assert body["code"] == "forbidden" and "jobs:ro" in body["error"]


async def test_job_logs_rows_full_text_and_include_result(hr: Stack, client: Client) -> None:
    word = unique_word()
    target = await client.submit("echo", "poll", {"message": f"find the {word} here"})
    others = [
        await client.submit("echo", "poll", {"message": "nothing to see"}),
        await client.submit("echo_py", "poll", {"message": "also nothing"}),
    ]
    await settle(hr, client, [target, *others])

    status, body = await client.get(f"/job-logs?query={word}")
    assert status == 200, body
    assert body["total"] == 1 and len(body["logs"]) == 1 and body["rank_window"] >= 50
    row = body["logs"][0]
    assert row["job_id"] == target and row["log_id"] == f"{target}-1" and row["attempt"] == 1
    assert row["plugin"] == "echo" and row["command"] == "poll" and row["status"] == "succeeded"
    assert row["submitted_by"] == "api" and row["last_error"] is None
    assert row["created_at"] <= row["completed_at"]
    assert {"level": "info", "message": f"Echoed: find the {word} here"} in row["logs"]
    assert "result" not in row

    status, body = await client.get(f"/job-logs?query={word}&include_result=true")
    assert status == 200 and body["logs"][0]["result"]["result"] == f"Echoed: find the {word} here"
    status, body = await client.get(f"/job-logs?query={word}&include_result=no")
    assert "result" not in body["logs"][0]
    status, body = await client.get("/job-logs?include_result=maybe")
    assert status == 400 and body["parameter"] == "include_result"

    # web-search syntax: a quoted phrase, and a word that appears nowhere
    status, body = await client.get(f'/job-logs?query="the {word}"')
    assert status == 200 and [r["job_id"] for r in body["logs"]] == [target]
    status, body = await client.get(f"/job-logs?query={word}xyz")
    assert status == 200 and body["logs"] == [] and body["total"] == 0
    status, body = await client.get("/job-logs?query=nothing")
    assert {r["job_id"] for r in body["logs"]} == set(others)

    status, body = await client.get("/job-logs")
    assert status == 200 and body["total"] == 3 and "rank_window" not in body
    assert {r["job_id"] for r in body["logs"]} == {target, *others}
    completed = [r["completed_at"] for r in body["logs"]]
    assert completed == sorted(completed, reverse=True)  # newest completed first
    assert all("result" not in r for r in body["logs"])

    status, body = await client.get(f"/job-logs?job_id={target}")
    assert [r["log_id"] for r in body["logs"]] == [f"{target}-1"]
    status, body = await client.get("/job-logs?plugin=echo_py")
    assert [r["job_id"] for r in body["logs"]] == [others[1]]
    status, body = await client.get("/job-logs?plugin=echo&command=poll&status=ok&submitted_by=api")
    assert body["total"] == 2
    status, body = await client.get("/job-logs?submitted_by=schedule")
    assert body["total"] == 0
    status, body = await client.get("/job-logs?status=error")
    assert status == 200 and body["total"] == 0


async def test_job_logs_time_bounds(hr: Stack, client: Client) -> None:
    job_id = await client.submit("echo", "poll", {"message": "timed"})
    (done,) = await settle(hr, client, [job_id])
    completed = done["completed_at"]

    async def ids(query: str) -> list[str]:
        status, body = await client.get(f"/job-logs?{query}")
        assert status == 200, (query, body)
        return [r["job_id"] for r in body["logs"]]

    assert await ids("from=2000-01-01T00:00:00Z&to=2999-01-01T00:00:00Z") == [job_id]
    assert await ids(f"from={completed}") == [job_id]
    assert await ids(f"to={completed}") == [job_id]
    assert await ids("from=2999-01-01T00:00:00Z") == []
    assert await ids("to=2000-01-01T00:00:00Z") == []
    # an offset, escaped and unescaped ('+' arrives as a space)
    assert await ids("from=2000-01-01T02:00:00%2B02:00") == [job_id]
    assert await ids("from=2000-01-01T02:00:00+02:00&to=2999-01-01T00:00:00-05:00") == [job_id]


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("from=yesterday", "from"),
        ("to=2026-13-01T00:00:00Z", "to"),
        ("from=2026-02-21", "from"),
        ("to=2026-02-21T10:00:00", "to"),
        ("from=1700000000", "from"),
    ],
)
async def test_job_logs_bad_time_is_400(client: Client, query: str, parameter: str) -> None:
    status, body = await client.get(f"/job-logs?{query}")
    assert status == 400, body
    assert body["parameter"] == parameter and f"'{parameter}'" in body["error"] and "RFC 3339" in body["error"]


async def test_failed_and_dead_jobs_are_found_by_error_and_status(
    make_config: Callable[..., Any], start_stack: Callable[..., Any]
) -> None:
    hr = await start_stack(make_config(plugins={"echo": {}, "py_tool": {}}))
    client = hr.client
    failing = await client.submit("py_tool", "fail")
    fine = await client.submit("echo", "poll", {"message": "fine"})
    done, _ = await settle(hr, client, [failing, fine])
    assert done["status"] in ("failed", "dead")

    status, body = await client.get("/job-logs?query=asked to fail")
    assert status == 200 and [r["job_id"] for r in body["logs"]] == [failing]
    row = body["logs"][0]
    assert row["status"] == "failed" and row["last_error"] == "py_tool was asked to fail"

    status, body = await client.get("/job-logs?status=failed")
    assert [r["job_id"] for r in body["logs"]] == [failing]
    status, body = await client.get("/job-logs?status=error&plugin=py_tool")
    assert [r["job_id"] for r in body["logs"]] == [failing]
    status, body = await client.get("/job-logs?status=succeeded")
    assert [r["job_id"] for r in body["logs"]] == [fine]

    status, body = await client.get(f"/jobs?status={done['status']}")
    assert [j["job_id"] for j in body["jobs"]] == [failing]
    status, body = await client.get("/job-logs?status=dead")
    # `dead` selects the attempts of jobs that ended dead (an attempt itself failed)
    assert [r["job_id"] for r in body["logs"]] == ([failing] if done["status"] == "dead" else [])

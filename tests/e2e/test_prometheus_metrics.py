"""GET /metrics over real HTTP, parsed with prometheus_client's own parsers: after a job that succeeds, one
that retries and dies, an agent run against the fake LLM and a backlog behind a busy plugin, the scrape
says exactly that (jobs by status from the read model, attempt histograms, retries and dead letters,
LLM tokens, HTTP requests by route template, queue depth and consumer pending, projection lag), and
the route's scope and OpenMetrics on request; a scrape that stays bounded while NATS hangs; and the metrics
port of a dispatcher run as its own process."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.openmetrics import parser as openmetrics_parser
from prometheus_client.parser import text_string_to_metric_families

from services.api import scrape_gauges
from services.core import embedded, subjects
from tests.support import fake_llm, infra, laddr, stack
from tests.support.fake_llm import FakeLLM
from tests.support.infra import wait_until
from tests.support.stack import ADMIN, TOKENS, ServiceProcess, Stack

#: a token as an operator would give Prometheus: `system:ro` and nothing else
SCRAPER = "test-prometheus-scraper"
FAST_DEATH = {"max_attempts": 2, "backoff_base": "0.1s"}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def api_with_scraper() -> dict[str, Any]:
    tokens = [*stack.config_doc()["api"]["auth"]["tokens"], {"name": "prom", "token": SCRAPER, "scopes": ["system:ro"]}]
    return {"listen": "127.0.0.1:0", "auth": {"tokens": tokens}}


async def fetch(url: str, *, token: str | None = ADMIN, accept: str | None = None) -> tuple[int, str, str]:
    """(status, Content-Type, body) of GET `url`."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if accept:
        headers["Accept"] = accept
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


def parse(text: str) -> tuple[Samples, dict[str, str]]:
    """(every sample by name and labels, every family's type by name)."""
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples, types


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def series(samples: Samples, name: str) -> list[dict[str, str]]:
    return [dict(labels) for sample, labels in samples if sample == name]


async def scrape(s: Stack) -> Samples:
    status, _, body = await fetch(s.url + "/metrics")
    assert status == 200, body
    return parse(body)[0]


async def test_metrics_after_jobs_retries_dead_letters_an_agent_and_a_backlog(
    make_config: Any, start_stack: Any, fake: FakeLLM, tmp_path: Path
) -> None:
    config = make_config(
        plugins=laddr.plugins(flaky={"retry": FAST_DEATH}, sleeper={"parallelism": 1}),
        agents={"summariser": laddr.agent(fake, "m-metrics")},
        api=api_with_scraper(),
    )
    s: Stack = await start_stack(config)
    assert s.client is not None
    fake.script("m-metrics", fake_llm.text("short", prompt_tokens=11, completion_tokens=4))
    before = await scrape(s)

    ok = await s.client.submit("echo", "poll", {"message": "metrics"})
    doomed = await s.client.submit("flaky", "poll", {"counter_file": str(tmp_path / "n")})
    status, body = await s.client.post("/api/jobs", json={"pipeline_name": "summariser", "inputs": {"task": "t"}})
    assert status == 200, body
    agent_run = body["job_id"]
    assert (await s.client.wait_job(ok))["status"] == "succeeded"
    assert (await s.client.wait_job(doomed))["status"] == "dead"
    assert (await s.client.wait_job(agent_run))["status"] == "succeeded"
    for _ in range(3):
        assert (await s.client.get(f"/job/{ok}/tree"))[0] == 200
    assert (await s.client.get(f"/no/such/route/{ok}"))[0] == 404
    last_seq = await s.caught_up()

    status, content_type, text = await fetch(s.url + "/metrics", token=SCRAPER)
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4"), (status, content_type)
    after, types = parse(text)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # jobs by status, from the read model (this test's database: absolute numbers), every status present
    assert types["headrace_jobs"] == "gauge"
    assert value(after, "headrace_jobs", plugin="echo", command="poll", status="succeeded") == 1
    assert ("headrace_jobs", (("command", "poll"), ("plugin", "echo"), ("status", "queued"))) in after
    assert value(after, "headrace_jobs", plugin="echo", command="poll", status="queued") == 0
    assert value(after, "headrace_jobs", plugin="flaky", command="poll", status="dead") == 1
    assert value(after, "headrace_jobs", plugin="agent", command="summariser", status="succeeded") == 1

    # attempts: one echo success, two flaky failures, one agent run; retries and dead letters as decided
    assert types["headrace_attempt_duration_seconds"] == "histogram"
    count = "headrace_attempt_duration_seconds_count"
    assert delta(count, plugin="echo", command="poll", outcome="succeeded") == 1
    assert delta(count, plugin="flaky", command="poll", outcome="failed") == 2
    assert delta(count, plugin="agent", command="summariser", outcome="succeeded") == 1
    flaky_inf = {"plugin": "flaky", "command": "poll", "outcome": "failed", "le": "+Inf"}
    assert delta("headrace_attempt_duration_seconds_bucket", **flaky_inf) == 2
    assert delta("headrace_attempt_duration_seconds_sum", plugin="flaky", command="poll", outcome="failed") > 0
    assert delta("headrace_retries_total", plugin="flaky", command="poll") == 1
    assert delta("headrace_dead_letters_total", plugin="flaky", command="poll", last_status="failed") == 1
    assert delta("headrace_dead_letters_total", plugin="echo", command="poll", last_status="failed") == 0

    # the agent's tokens, as the fake LLM reported them, under its configured model
    assert delta("headrace_llm_tokens_total", agent="summariser", model="m-metrics", kind="prompt") == 11
    assert delta("headrace_llm_tokens_total", agent="summariser", model="m-metrics", kind="completion") == 4
    assert delta("headrace_llm_completions_total", agent="summariser", model="m-metrics") == 1

    # HTTP by route template, never the raw path; no route is one fixed label
    tree = {"method": "GET", "route": "/job/{job_id}/tree"}
    assert delta("headrace_http_requests_total", **tree, status="200") == 3
    assert delta("headrace_http_request_duration_seconds_count", **tree) == 3
    assert delta("headrace_http_requests_total", method="GET", route="<unmatched>", status="404") == 1
    assert not [labels for labels in series(after, "headrace_http_requests_total") if ok in labels["route"]]

    # at rest: nothing behind the projector, the queues drained, every durable consumer reported
    assert value(after, "headrace_projection_lag_events") == 0
    assert value(after, "headrace_projection_checkpoint") == last_seq
    assert value(after, "headrace_queue_depth", plugin="echo") == 0
    assert value(after, "headrace_queue_delayed", plugin="flaky") == 0
    consumers = {labels["consumer"]: labels["stream"] for labels in series(after, "headrace_consumer_pending")}
    assert consumers[subjects.DISPATCHER_OUTCOMES] == subjects.EVENTS
    assert consumers["runner-echo"] == consumers["agent-summariser"] == subjects.WORK
    assert value(after, "headrace_consumer_pending", stream="EVENTS", consumer=subjects.DISPATCHER_OUTCOMES) == 0
    for collector in scrape_gauges.COLLECTORS:
        assert value(after, "headrace_scrape_collector_success", collector=collector) == 1, collector
    assert value(after, "process_resident_memory_bytes") > 0 and "python_info" in types

    # the route's scope: system:ro (or *), nothing else; OpenMetrics when the scraper asks for it
    url = s.url + "/metrics"
    assert (await fetch(url, token=None))[0] == 401
    status, _, body = await fetch(url, token=TOKENS["jobs_rw"][0])
    assert status == 403 and "system:ro" in body
    status, content_type, text = await fetch(url, token=SCRAPER, accept="application/openmetrics-text; version=1.0.0")
    assert status == 200 and content_type.startswith("application/openmetrics-text"), content_type
    assert text.endswith("# EOF\n")
    names = {family.name for family in openmetrics_parser.text_string_to_metric_families(text)}
    assert {"headrace_jobs", "headrace_http_requests", "headrace_projection_lag_events"} <= names

    # a backlog: one sleeper running (parallelism 1), one waiting for it
    sleepers = [await s.client.submit("sleeper", "poll", {"seconds": 20}) for _ in range(2)]

    async def backlog() -> Samples | None:
        now = await scrape(s)
        running = value(now, "headrace_jobs", plugin="sleeper", command="poll", status="running")
        depth = value(now, "headrace_queue_depth", plugin="sleeper")
        return now if running == 1 and depth == 1 else None

    busy = await wait_until(backlog, timeout_s=15, interval_s=0.1, what="one sleeper running and one queued")
    assert value(busy, "headrace_consumer_ack_pending", stream="WORK", consumer="runner-sleeper") == 1
    assert value(busy, "headrace_jobs", plugin="sleeper", command="poll", status="queued") == 1
    for job_id in sleepers:  # leave no 20 s sleeper behind
        await s.client.post(f"/job/{job_id}/cancel")
    for job_id in sleepers:
        assert (await s.client.wait_job(job_id))["status"] == "cancelled"


async def test_a_scrape_stays_bounded_while_nats_hangs(tmp_path: Path, database_url: str) -> None:
    nats = infra.NatsServer(tmp_path / "own-nats")
    await nats.start()
    config = stack.write_config(tmp_path / "c.yaml", stack.config_doc(), nats_url=nats.url, database_url=database_url)
    s = await Stack(config).start()
    proc = nats.embedded.proc
    assert proc is not None
    try:
        assert value(await scrape(s), "headrace_scrape_collector_success", collector="queue") == 1
        os.kill(proc.pid, signal.SIGSTOP)  # connections stay open, nothing answers: a hung NATS
        try:
            started = time.monotonic()
            samples = await scrape(s)
            took = time.monotonic() - started
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        assert took < scrape_gauges.SCRAPE_TIMEOUT_S + 1.5, took
        success = {
            c: value(samples, "headrace_scrape_collector_success", collector=c) for c in scrape_gauges.COLLECTORS
        }
        assert success == {"jobs": 1, "queue": 0, "projection": 0}
        assert value(samples, "headrace_scrape_collector_duration_seconds", collector="queue") >= (
            scrape_gauges.SCRAPE_TIMEOUT_S
        )
        assert (
            "headrace_http_requests_total",
            (("method", "GET"), ("route", "/metrics"), ("status", "200")),
        ) in samples
    finally:
        await s.stop()
        await nats.stop()


async def test_a_dispatcher_run_alone_serves_its_metrics_port(
    make_config: Any, nats_url: str, database_url: str, tmp_path: Path
) -> None:
    config = make_config(plugins={"echo": {}, "flaky": {"retry": FAST_DEATH}}, api=api_with_scraper())
    s = Stack(config)
    s.services.remove(s.dispatcher)  # the dispatcher runs as `headrace dispatcher`, its metrics port from env
    port = embedded.free_port()
    dispatcher = ServiceProcess(
        "dispatcher",
        config_path=config.path,
        nats_url=nats_url,
        database_url=database_url,
        log_path=tmp_path / "dispatcher.log",
        env={"HEADRACE_METRICS_PORT": str(port)},
    ).start()
    url = f"http://127.0.0.1:{port}/metrics"
    try:

        async def serving() -> bool:
            try:
                return (await fetch(url, token=None))[0] == 401
            except aiohttp.ClientError:
                return False

        # the port opens once the dispatcher has started (its consumers exist)
        await wait_until(serving, timeout_s=30, interval_s=0.1, what="the dispatcher's metrics port")
        await s.start()
        assert s.client is not None
        assert (await fetch(url, token=TOKENS["jobs_ro"][0]))[0] == 403
        doomed = await s.client.submit("flaky", "poll", {"counter_file": str(tmp_path / "n")})
        assert (await s.client.wait_job(doomed))["status"] == "dead"
        status, content_type, text = await fetch(url, token=SCRAPER)
        assert status == 200 and content_type.startswith("text/plain"), content_type
        samples, types = parse(text)
        # this process's own counts: it decided the one retry and the one dead letter
        assert value(samples, "headrace_retries_total", plugin="flaky", command="poll") == 1
        assert value(samples, "headrace_dead_letters_total", plugin="flaky", command="poll", last_status="failed") == 1
        assert types["headrace_attempt_duration_seconds"] == "histogram"  # defined, never observed here
        assert not series(samples, "headrace_attempt_duration_seconds_count")
        assert value(samples, "process_resident_memory_bytes") > 0
        assert "headrace_jobs" not in types  # the scrape-time gauges are the API's
    finally:
        await s.stop()
        assert await dispatcher.stop() == 0, (tmp_path / "dispatcher.log").read_text()[-2000:]

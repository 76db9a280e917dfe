"""The gauges GET /metrics reads from shared state when it is scraped, so they are right however many
processes do the work (every API instance reports the same values: aggregate them with `max`, not `sum`):

    jobs        headrace_jobs{plugin,command,status}             `job_totals`, the projector's counts of the jobs rows
    queue       headrace_queue_depth{plugin}, _delayed{plugin}   one stream_info of WORK, by subject
                headrace_consumer_pending / _ack_pending / _redelivered{stream,consumer}
                                                                 the durable consumers of the dispatcher and runners
    projection  headrace_projection_lag_events, headrace_projection_checkpoint
                                                                 EVENTS' last sequence minus the projector's checkpoint

Each collector has SCRAPE_TIMEOUT_S: a slow or unreachable NATS or Postgres costs a scrape that long at most,
and the scrape reports what did answer, with `headrace_scrape_collector_success{collector}` 0 for what did not.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import nats.js.errors
from nats.js import api
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from services.api import analytics, state
from services.core import agents, logging, subjects
from services.projector.sql import queries

log = logging.get("api.metrics")

#: how long one collector may take (Prometheus' default scrape_timeout is 10 s)
SCRAPE_TIMEOUT_S = 2.0
JOB_TOTALS_SQL = "SELECT plugin, command, status, n FROM job_totals"
#: the dispatcher's durable consumers, by stream
DISPATCHER_CONSUMERS = (
    (subjects.COMMANDS, subjects.DISPATCHER_COMMANDS),
    (subjects.EVENTS, subjects.DISPATCHER_OUTCOMES),
    (subjects.WORK, subjects.DISPATCHER_DELAYS),
    (subjects.INGEST, subjects.DISPATCHER_INGEST),
)

Collector = Callable[[state.ApiState], Awaitable[list[Metric]]]


async def jobs(st: state.ApiState) -> list[Metric]:
    """Every (plugin, command) the read model has jobs of, with all statuses (0 where none)."""
    rows = await st.pool.fetch(JOB_TOTALS_SQL)
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for r in rows:
        counts.setdefault((r["plugin"], r["command"]), dict.fromkeys(analytics.STATUSES, 0))[r["status"]] = int(r["n"])
    family = GaugeMetricFamily(
        "headrace_jobs",
        "Jobs in the read model by plugin, command and current status",
        labels=["plugin", "command", "status"],
    )
    for (plugin, command), by_status in sorted(counts.items()):
        for status, n in by_status.items():
            family.add_metric([plugin, command, status], n)
    return [family]


def durable_consumers(st: state.ApiState) -> list[tuple[str, str, str]]:
    """(stream, consumer, plugin or "") of every durable consumer the dispatcher and the runners make."""
    out = [(stream, name, "") for stream, name in DISPATCHER_CONSUMERS]
    for plugin in sorted(st.catalog.plugins):
        if plugin in agents.RESERVED or not st.config.plugin(plugin).enabled:
            continue
        try:
            out.append((subjects.WORK, subjects.runner_consumer(plugin), plugin))
        except ValueError:  # a name that cannot be a subject token has no mailbox
            continue
    out.append((subjects.WORK, subjects.runner_consumer(agents.PROMPT), agents.PROMPT))
    for agent in sorted(st.config.agents):
        try:
            out.append((subjects.WORK, subjects.agent_consumer(agent), agents.AGENT))
        except ValueError:
            continue
    return out


async def _consumer(st: state.ApiState, stream: str, name: str) -> api.ConsumerInfo | None:
    try:
        info: api.ConsumerInfo = await st.bus.js.consumer_info(stream, name)
        return info
    except nats.js.errors.NotFoundError:  # its service has not started yet
        return None


async def queue(st: state.ApiState) -> list[Metric]:
    durables = durable_consumers(st)
    info, found = await asyncio.gather(
        st.bus.js.stream_info(subjects.WORK, subjects_filter=">"),
        asyncio.gather(*(_consumer(st, stream, name) for stream, name, _ in durables)),
    )
    waiting: dict[str, int] = {}
    delayed: dict[str, int] = {}
    for subject, n in (info.state.subjects or {}).items():
        parts = subject.split(".")
        if subjects.is_delayed(subject) and len(parts) >= 3:
            delayed[parts[2]] = delayed.get(parts[2], 0) + int(n)
        elif len(parts) >= 2 and subjects.stream_of(subject) == subjects.WORK:
            waiting[parts[1]] = waiting.get(parts[1], 0) + int(n)
    in_flight: dict[str, int] = {}
    labels = ["stream", "consumer"]
    pending = GaugeMetricFamily(
        "headrace_consumer_pending", "Messages a durable consumer has not delivered yet", labels=labels
    )
    ack_pending = GaugeMetricFamily(
        "headrace_consumer_ack_pending", "Messages a durable consumer delivered and awaits the ack of", labels=labels
    )
    redelivered = GaugeMetricFamily(
        "headrace_consumer_redelivered",
        "Messages of a durable consumer delivered more than once and not acked yet",
        labels=labels,
    )
    for (stream, name, plugin), consumer in zip(durables, found, strict=True):
        if consumer is None:
            continue
        pending.add_metric([stream, name], int(consumer.num_pending or 0))
        ack_pending.add_metric([stream, name], int(consumer.num_ack_pending or 0))
        redelivered.add_metric([stream, name], int(consumer.num_redelivered or 0))
        if plugin:
            in_flight[plugin] = in_flight.get(plugin, 0) + int(consumer.num_ack_pending or 0)
    depth = GaugeMetricFamily(
        "headrace_queue_depth", "Work items waiting for a runner (due, not in flight), by plugin", labels=["plugin"]
    )
    parked = GaugeMetricFamily(
        "headrace_queue_delayed", "Work items parked until their retry backoff is over, by plugin", labels=["plugin"]
    )
    # a work-queue stream keeps an item until it is acked: what is not in flight is waiting
    for plugin in sorted({*(p for _, _, p in durables if p), *waiting, *delayed}):
        depth.add_metric([plugin], max(0, waiting.get(plugin, 0) - in_flight.get(plugin, 0)))
        parked.add_metric([plugin], delayed.get(plugin, 0))
    return [depth, parked, pending, ack_pending, redelivered]


async def projection(st: state.ApiState) -> list[Metric]:
    checkpoint, info = await asyncio.gather(
        st.pool.fetchval(queries["read_checkpoint"]), st.bus.js.stream_info(subjects.EVENTS)
    )
    position = int(checkpoint or 0)
    lag = GaugeMetricFamily(
        "headrace_projection_lag_events", "Events stored in EVENTS that the projector has not applied yet"
    )
    lag.add_metric([], max(0, int(info.state.last_seq) - position))
    applied = GaugeMetricFamily(
        "headrace_projection_checkpoint", "Stream sequence of the last event the projector applied to the read models"
    )
    applied.add_metric([], position)
    return [lag, applied]


COLLECTORS: dict[str, Collector] = {"jobs": jobs, "queue": queue, "projection": projection}


async def _bounded(name: str, collector: Collector, st: state.ApiState) -> tuple[list[Metric] | None, float]:
    """The collector's families (None when it failed or took too long) and its duration."""
    started = time.perf_counter()
    try:
        families = await asyncio.wait_for(collector(st), SCRAPE_TIMEOUT_S)
    except Exception as exc:  # what a failing dependency raises varies; the scrape reports it and goes on
        log.warning("metrics_collector_failed", collector=name, error=str(exc) or type(exc).__name__)
        families = None
    return families, time.perf_counter() - started


async def collect(st: state.ApiState) -> list[Metric]:
    """Every collector at once, plus their success and duration."""
    results = await asyncio.gather(*(_bounded(name, collector, st) for name, collector in COLLECTORS.items()))
    success = GaugeMetricFamily(
        "headrace_scrape_collector_success",
        "Whether a scrape-time collector answered within its timeout (1) or not (0)",
        labels=["collector"],
    )
    duration = GaugeMetricFamily(
        "headrace_scrape_collector_duration_seconds", "How long a scrape-time collector took", labels=["collector"]
    )
    out: list[Metric] = []
    for name, (families, seconds) in zip(COLLECTORS, results, strict=True):
        out += families or []
        success.add_metric([name], 0 if families is None else 1)
        duration.add_metric([name], seconds)
    return [*out, success, duration]

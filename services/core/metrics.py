"""Headrace's Prometheus metrics, defined once: what each process records where the work happens (on
prometheus_client's default registry, which also carries its process, platform and GC collectors), the
one-line recorders the work sites call, and the exposition of a scrape (Prometheus text, or OpenMetrics
when the scraper asks for it).

Every label takes values from a bounded set: plugin, command and agent names the config defines, the
outcome and status enums, an HTTP route's template (never the raw path) and the LLM model an agent is
configured with. The gauges read from shared state at scrape time (jobs, queues, projection lag) are built
by the API (services/api/scrape_gauges.py) and handed to `render` with the process's own families.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import REGISTRY, Counter, Histogram, disable_created_metrics
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric

from services.core import envelope, subjects

# the `_created` series double every counter and histogram for no use here
disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus-client leaves it unannotated

#: one attempt of a plugin: from a few milliseconds (in-process) to an hour-long command
ATTEMPT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
#: the label of a request that matched no route (404, 405): one series, whatever the path was
UNMATCHED_ROUTE = "<unmatched>"
#: request methods kept as they are; any other token a client sends is counted as "other"
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

ATTEMPT_DURATION = Histogram(
    "headrace_attempt_duration_seconds",
    "Duration of one attempt of a plugin command (or agent run, or prompt), by how it ended",
    ["plugin", "command", "outcome"],
    buckets=ATTEMPT_BUCKETS,
)
RETRIES = Counter(
    "headrace_retries",
    "Retries the dispatcher scheduled after a failed or timed-out attempt (stored, not only decided)",
    ["plugin", "command"],
)
DEAD_LETTERS = Counter(
    "headrace_dead_letters",
    "Jobs the dispatcher dead-lettered (retries exhausted, or a permanent failure), by the last attempt's status",
    ["plugin", "command", "last_status"],
)
HTTP_REQUESTS = Counter(
    "headrace_http_requests",
    "HTTP requests the API answered, by method, route template and status code",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "headrace_http_request_duration_seconds",
    "Time from a request's arrival to its handler's return (for streams and WebSockets: their lifetime)",
    ["method", "route"],
)
LLM_TOKENS = Counter(
    "headrace_llm_tokens",
    "LLM tokens the agents used, as the LLM reported them, by agent, configured model and kind",
    ["agent", "model", "kind"],
)
LLM_COMPLETIONS = Counter(
    "headrace_llm_completions",
    "Chat completions the agents received from their LLM",
    ["agent", "model"],
)


# --- the recorders (one call at each work site) ---------------------------------------------------


def attempt_finished(plugin: str, command: str, outcome: str, duration_ms: int) -> None:
    """The runner stored an attempt's outcome (succeeded, failed, timed_out, cancelled)."""
    ATTEMPT_DURATION.labels(plugin, command, outcome).observe(max(0, duration_ms) / 1000)


def fates_stored(published: Iterable[tuple[str, envelope.Envelope]]) -> None:
    """The dispatcher stored these decisions: count its dead letters (`job.dead`) and its retries (each is
    one work item parked on delay.work.<plugin>.<command>)."""
    for subject, env in published:
        if env.type == "job.dead":
            data = env.data
            DEAD_LETTERS.labels(str(data.get("plugin")), str(data.get("command")), str(data.get("last_status"))).inc()
        elif subjects.is_delayed(subject):
            RETRIES.labels(str(env.data.get("plugin")), str(env.data.get("command"))).inc()


def http_request(method: str, route: str, status: int, seconds: float) -> None:
    """The API answered a request (`route`: the matched route's template, or UNMATCHED_ROUTE)."""
    method = method if method in HTTP_METHODS else "other"
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    HTTP_DURATION.labels(method, route).observe(seconds)


def llm_used(agent: str, model: str, prompt_tokens: int, completion_tokens: int) -> None:
    """An agent received a chat completion with this usage."""
    LLM_COMPLETIONS.labels(agent, model).inc()
    LLM_TOKENS.labels(agent, model, "prompt").inc(max(0, prompt_tokens))
    LLM_TOKENS.labels(agent, model, "completion").inc(max(0, completion_tokens))


# --- exposition ------------------------------------------------------------------------------------


class _Scrape:
    """What one scrape exposes: this process's registry, then the families read at scrape time."""

    def __init__(self, extra: Iterable[Metric]) -> None:
        self.extra = list(extra)

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()
        yield from self.extra


def render(accept: str | None, extra: Iterable[Metric] = ()) -> tuple[bytes, str]:
    """(body, Content-Type) of a scrape: OpenMetrics when `accept` asks for it, else Prometheus text."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(_Scrape(extra)), content_type

"""GET /metrics: Prometheus' scrape of this process (services/core/metrics.py: its counters and histograms,
and under `headrace up` those of all four services, which share the process) plus the gauges read from
shared state at scrape time (services/api/scrape_gauges.py). Prometheus text format, or OpenMetrics when
the scraper's Accept asks for it; gzip when it accepts that. The route table gives it `system:ro` (or
`system:rw`, or `*`): services/core/scopes.py."""

from __future__ import annotations

from aiohttp import web

from services.api import scrape_gauges, state
from services.core import metrics

routes = web.RouteTableDef()


@routes.get("/metrics")
async def scrape(request: web.Request) -> web.Response:
    families = await scrape_gauges.collect(state.of(request))
    body, content_type = metrics.render(request.headers.get("Accept"), families)
    response = web.Response(body=body, headers={"Content-Type": content_type})
    response.enable_compression()
    return response

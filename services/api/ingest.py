"""GET /events/rejected (events:ro): events from outside (`ingest.<type>` on NATS) that the
dispatcher refused, newest first, with the reason and the raw body (truncated) — read from the
`ingest_rejections` read model the projector folds from `evt.ingest.rejected`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.api import auth, bodies, state
from services.core import envelope

routes = web.RouteTableDef()

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000

REJECTED_SQL = """
SELECT id, event_id, subject, ingest_seq, claimed_type, reason, raw, raw_bytes, truncated, rejected_at
FROM ingest_rejections ORDER BY id DESC LIMIT $1 OFFSET $2
"""


def rejection(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "seq": row["id"],
        "id": row["event_id"],
        "subject": row["subject"],
        "ingest_seq": row["ingest_seq"],
        "type": row["claimed_type"],
        "reason": row["reason"],
        "raw": row["raw"],
        "raw_bytes": row["raw_bytes"],
        "truncated": row["truncated"],
        "rejected_at": envelope.rfc3339(row["rejected_at"]),
    }


@routes.get("/events/rejected")
async def list_rejected(request: web.Request) -> web.Response:
    auth.require(request, "events:ro")
    st = state.of(request)
    limit, offset = bodies.page(request, default_limit=DEFAULT_LIMIT, max_limit=MAX_LIMIT)
    rows = [rejection(dict(r)) for r in await st.pool.fetch(REJECTED_SQL, limit, offset)]
    return web.json_response({"events": rows, "count": len(rows), "limit": limit, "offset": offset}, dumps=state.dumps)

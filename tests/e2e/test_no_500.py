"""Bad input is a feature: every route of the app, hit with junk path parameters, malformed
bodies and wrong query types, answers a JSON 4xx (or a success) — never a 500."""

from __future__ import annotations

import re

from tests.support import laddr
from tests.support.stack import Client, Stack

JUNK_QUERY = (
    "?limit=x&offset=-3&status=nope&from=yesterday&include_result=maybe&wait=perhaps&timeout=soon"
    "&message=&type=&job_id=..&token="
)
BODIES = [
    None,
    b"{not json",
    b"[1,2,3]",
    b'"str"',
    b'{"payload": 5, "inputs": "x", "pipeline_name": 7, '
    b'"agents": "a", "mode": 3, "prompt_name": [], "reexecute": "no"}',
]


async def test_no_route_answers_500_to_junk(hr: Stack, client: Client) -> None:
    assert hr.api.app is not None
    seen = 0
    for route in hr.api.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if not path or route.method == "HEAD" or path.startswith("/events"):  # SSE streams forever: tested apart
            continue
        concrete = re.sub(r"\{[^}]+\}", "no-such-thing", path)
        for body in BODIES if route.method == "POST" else [None]:
            status, answer = await client.request(
                route.method, concrete + JUNK_QUERY, data=body, headers={"Content-Type": "application/json"}
            )
            seen += 1
            # the one designed 5xx: Laddr's container-log routes say 503 "no containers here", as Laddr does
            assert status < 500 or laddr.designed_unavailable(concrete, status, answer), (
                route.method,
                concrete,
                body,
                status,
                answer,
            )
            if status >= 400:
                assert isinstance(answer, dict) and "error" in answer, (route.method, concrete, answer)
    assert seen > 40

"""Ductile's narrow scopes in a config work on the routes Ductile admits them to, with Ductile's
implication rules (services/core/scopes.py `implied`), through HTTP like curl; the scopes the
reference documents keep working as before."""

from __future__ import annotations

from typing import Any

from tests.support.stack import ADMIN, TOKENS

NARROW = {
    "status": ("narrow-status-token", ["jobs:status:ro"]),
    "tree": ("narrow-tree-token-0", ["jobs:tree:ro"]),
    "logs": ("narrow-logs-token-0", ["jobs:logs:ro"]),
    "invoke": ("narrow-invoke-token", ["plugin:invoke:ro"]),
    "catalog": ("narrow-catalog-token", ["plugin:catalog:ro"]),
    "system_ro": ("narrow-system-ro-tok", ["system:ro"]),
    "system_rw": ("narrow-system-rw-tok", ["system:rw"]),
    "dead": ("dead-scopes-token-0", ["job:ro", "state:ro"]),
}


async def test_narrow_scopes_reach_exactly_their_routes(make_config: Any, start_stack: Any) -> None:
    tokens = [{"name": k, "token": t, "scopes": s} for k, (t, s) in {**TOKENS, **NARROW}.items()]
    config = make_config(api={"listen": "127.0.0.1:0", "auth": {"tokens": tokens}})
    assert any("'job:ro' is no scope any route checks" in w for w in config.warnings)
    s = await start_stack(config)
    job_id = await s.client.submit("echo", "poll", {"message": "narrow"})
    await s.client.wait_job(job_id)
    t = {k: v[0] for k, v in NARROW.items()}

    async def status(method: str, path: str, token: str, body: Any = None) -> int:
        code, _ = await s.client.request(method, path, token=token, json=body)
        return code

    expect = [
        ("GET", f"/job/{job_id}", t["status"], 200),
        ("GET", "/jobs", t["status"], 200),
        ("GET", "/scheduler/jobs", t["status"], 200),
        ("GET", "/job-logs", t["status"], 403),
        ("GET", f"/job/{job_id}/tree", t["status"], 403),
        ("GET", f"/job/{job_id}/tree", t["tree"], 200),
        ("GET", f"/job/{job_id}", t["tree"], 403),
        ("GET", "/job-logs", t["logs"], 200),
        ("GET", "/plugin/echo", t["catalog"], 200),
        ("POST", "/plugin/echo/health", t["catalog"], 403),
        ("POST", "/plugin/echo/health", t["invoke"], 202),
        ("POST", "/plugin/echo/poll", t["invoke"], 403),  # a write command needs plugin:rw
        ("GET", "/plugin/echo", t["invoke"], 403),  # invoking does not imply the catalog
        ("GET", "/config/view", t["system_ro"], 200),
        ("POST", "/system/reload", t["system_ro"], 403),  # system:ro does not imply system:rw
        ("GET", "/config/view", t["system_rw"], 200),
        ("POST", "/system/reload", t["system_rw"], 200),
        ("GET", f"/job/{job_id}", t["dead"], 403),  # dead scopes match nothing
        ("GET", f"/job/{job_id}", TOKENS["jobs_ro"][0], 200),  # jobs:ro implies jobs:status:ro
        ("GET", "/config/view", TOKENS["jobs_rw"][0], 403),  # nothing implies system:*
        ("POST", "/system/reload", ADMIN, 200),
    ]
    got = [(m, p, tok, await status(m, p, tok, {} if m == "POST" else None)) for m, p, tok, _ in expect]
    assert got == [(m, p, tok, code) for m, p, tok, code in expect]
    code, body = await s.client.post("/plugin/echo/health", token=t["invoke"], json={})
    assert code == 202 and (await s.client.wait_job(body["job_id"]))["status"] == "succeeded"

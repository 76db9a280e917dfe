"""GET /healthz answers 503 naming the failing component when NATS or Postgres is down."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support import infra, stack


async def test_healthz_is_503_when_nats_is_down(tmp_path: Path, database_url: str) -> None:
    nats = infra.NatsServer(tmp_path / "own-nats")
    await nats.start()
    config = stack.write_config(tmp_path / "c.yaml", stack.config_doc(), nats_url=nats.url, database_url=database_url)
    s = await stack.Stack(config).start()
    try:
        assert s.client is not None
        status, body = await s.client.get("/healthz", token=None)
        assert status == 200
        await nats.kill()

        async def degraded() -> Any:
            st, b = await s.client.get("/healthz", token=None)  # type: ignore[union-attr]
            return b if st == 503 else None

        body = await infra.wait_until(degraded, timeout_s=10, what="healthz 503")
        assert body["failing"] == ["nats"] and body["components"]["postgres"]["ok"] is True
        # nothing is lost and a submit gets a clear error, not a 500
        status, body = await s.client.post("/plugin/echo/poll", json={})
        assert status == 503 and body["code"] == "service_unavailable"
    finally:
        await s.stop()
        await nats.stop()


async def test_healthz_is_503_when_postgres_is_down(hr: stack.Stack, client: stack.Client) -> None:
    assert hr.api.pool is not None
    await hr.api.pool.close()  # the API's read pool is gone: the same as the database being unreachable
    status, body = await client.get("/healthz", token=None)
    assert status == 503 and body["failing"] == ["postgres"]
    status, body = await client.get("/job/abc")
    assert status == 503 and body["code"] == "service_unavailable"

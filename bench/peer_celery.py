"""The Celery app `python -m bench --peers` runs (in the peers venv, never Headrace's):
`celery -A bench.peer_celery worker --pool prefork -c <cores>` on the harness's private Redis
(PEER_REDIS_URL). `noop` records its completion with one INCR (how the load process counts
done jobs without a result per job); `noop_result` keeps its result in the Redis result backend
for `apply_async().get()`.
"""

from __future__ import annotations

import os

import redis
from celery import Celery

URL = os.environ.get("PEER_REDIS_URL", "redis://127.0.0.1:6379/0")
DONE_KEY = "hr-bench:celery:done"

app = Celery("hr_bench_peer", broker=URL, backend=URL)
app.conf.update(
    task_ignore_result=True,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    worker_send_task_events=False,
    task_send_sent_event=False,
)
_redis: redis.Redis | None = None


def _client() -> redis.Redis:
    global _redis
    if _redis is None:  # one connection per prefork child, opened after the fork
        _redis = redis.Redis.from_url(URL)
    return _redis


@app.task(name="noop", ignore_result=True)
def noop(message: str) -> str:
    _client().incr(DONE_KEY)
    return message


@app.task(name="noop_result", ignore_result=False)
def noop_result(message: str) -> str:
    return message

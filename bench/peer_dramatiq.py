"""The Dramatiq actors `python -m bench --peers` runs (in the peers venv, never Headrace's):
`dramatiq bench.peer_dramatiq` with its default processes x threads on the harness's private
Redis (PEER_REDIS_URL). `noop` records its completion with one INCR; `noop_result` stores its
result through the Results middleware (Redis backend) for `message.get_result(block=True)`.
"""

from __future__ import annotations

import os

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

URL = os.environ.get("PEER_REDIS_URL", "redis://127.0.0.1:6379/0")
DONE_KEY = "hr-bench:dramatiq:done"

broker = RedisBroker(url=URL)
broker.add_middleware(Results(backend=RedisBackend(url=URL)))
dramatiq.set_broker(broker)
_redis: redis.Redis | None = None


def _client() -> redis.Redis:
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(URL)
    return _redis


@dramatiq.actor(max_retries=0)
def noop(message: str) -> str:
    _client().incr(DONE_KEY)
    return message


@dramatiq.actor(max_retries=0, store_results=True)
def noop_result(message: str) -> str:
    return message

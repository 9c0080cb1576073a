"""Workers say they are alive: every second each worker writes its name into one
sorted set with the time (Redis's clock) its word runs out, ``HEARTBEAT_TTL_S`` on.

A reader (the gateway's ``/health``) takes a worker as alive while its time has not
run out, so a dead worker (or every worker, or Redis) shows within the TTL and the
reader's cache. Two round trips per worker per second; nothing per task.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, cast

import redis

from throttle.connect import RedisClient
from workers.app_config import app_config
from workers.context import worker_context
from workers.thread_step import ThreadStep

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 1.0
HEARTBEAT_TTL_S = 3.0


def heartbeat_key(prefix: str) -> str:
    return f"{prefix}:workers"


def beat(client: RedisClient, key: str, name: str, ttl_s: float = HEARTBEAT_TTL_S) -> None:
    """One heartbeat: ``name`` alive until server now + ``ttl_s``; long-dead names go."""
    seconds, micros = cast(tuple[int, int], client.time())
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    pipe = client.pipeline(transaction=False)
    pipe.zadd(key, {name: now_ms + int(ttl_s * 1000)})
    pipe.zremrangebyscore(key, "-inf", now_ms - 3_600_000)
    pipe.execute()


def alive_until_ms(server_time: tuple[Any, Any], newest: list[tuple[Any, float]]) -> float:
    """From ``TIME`` and ``ZRANGE key -1 -1 WITHSCORES``: how long (ms, negative when
    past) the longest-lived worker's word still holds; -inf with no worker."""
    seconds, micros = server_time
    now_ms = int(seconds) * 1000 + int(micros) / 1000
    if not newest:
        return float("-inf")
    return float(newest[0][1]) - now_ms


class HeartbeatStep(ThreadStep):
    """Beats for the life of the worker."""

    thread_name = "llm-throttle-heartbeat"

    def target(self, worker: Any) -> Callable[[threading.Event], None]:
        config = app_config(worker.app)
        client = worker_context(worker.app).client
        key, name = heartbeat_key(config.redis.prefix), str(worker.hostname)

        def run(stop: threading.Event) -> None:
            while not stop.is_set():
                try:
                    beat(client, key, name)
                except redis.RedisError as exc:
                    log.debug("heartbeat: %s", exc)
                stop.wait(HEARTBEAT_INTERVAL_S)

        return run

"""Per-process worker resources, built lazily after the pool forks.

Each worker process (a prefork child, or the one process of a threads pool) gets its own
Redis client, limiter, parking lot, provider clients and runner. They are never shared
across a fork.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from celery import Celery

from throttle.config import Config
from throttle.connect import RedisClient, connect
from throttle.keys import KeyBuilder
from throttle.limiter import RedisLimiter
from throttle.parking import ParkingLot
from throttle.redis_url import Topology, parse_redis_url
from throttle.scheduler import BrokerOnServer, FairScheduler
from throttle.scripts import Scripts
from workers.app_config import app_config
from workers.message import broker_db_for_release, redis_db, unacked_keys
from workers.runtime import ClientPool, CompletionRunner, SleeperGate

log = logging.getLogger(__name__)

#: Threads per worker process, set by the worker bootstep; 1 for prefork children.
_pool_threads = 1


def set_pool_threads(count: int) -> None:
    global _pool_threads
    _pool_threads = max(1, count)


@dataclass
class WorkerContext:
    config: Config
    client: RedisClient
    limiter: RedisLimiter
    parking: ParkingLot
    runner: CompletionRunner
    scheduler: FairScheduler


_lock = threading.Lock()


def redis_client(config: Config) -> RedisClient:
    connections = max(8, _pool_threads * 2)
    if parse_redis_url(config.redis.url).topology is Topology.CLUSTER:
        # the dispatcher's wake watchers hold one connection per group (throttle/wake.py)
        connections += len(config.limit_group_names())
    return connect(
        config.redis.url,
        timeout_s=config.redis.socket_timeout_s,
        health_check_interval_s=30,
        max_connections=connections,
    )


def build_context(config: Config, broker_options: Mapping[str, Any] | None = None) -> WorkerContext:
    """``broker_options``: the app's broker transport options (kombu's key names)."""
    client = redis_client(config)
    keys = KeyBuilder(config.redis.prefix)
    scripts = Scripts(client)
    limiter = RedisLimiter(client, keys=keys)
    sleepers = SleeperGate(int(_pool_threads * config.worker.max_sleeping_fraction))
    runner = CompletionRunner(
        config, limiter, ClientPool(pool_size=max(4, _pool_threads)), sleepers=sleepers
    )
    return WorkerContext(
        config,
        client,
        limiter,
        ParkingLot(client, keys, scripts),
        runner,
        fair_scheduler(config, limiter, broker_options or {}),
    )


def fair_scheduler(
    config: Config, limiter: RedisLimiter, broker_options: Mapping[str, Any]
) -> FairScheduler:
    worker = config.worker
    broker = None
    if config.scheduler.publish_in_redis:
        broker_db = broker_db_for_release(config.redis.url, config.broker_url)
        if broker_db is None:
            log.info(
                "scheduler.publish_in_redis: the broker is not on the limiter's server"
                " (another server, or a Redis Cluster); dispatchers publish released tasks"
            )
        else:
            unacked_hash, unacked_index = unacked_keys(broker_options)
            broker = BrokerOnServer(
                broker_db, redis_db(config.redis.url), unacked_hash, unacked_index
            )
    return FairScheduler(
        limiter,
        config.scheduler.lanes,
        release_lead_s=worker.release_lead_s,
        # items give up at their throttle deadline; their keys outlive it
        queue_ttl_s=worker.throttle_deadline_s + config.celery.visibility_timeout_s + 3600,
        broker=broker,
    )


def worker_context(app: Celery) -> WorkerContext:
    """This process's context for ``app`` (built on first use in each process; kept on
    the app, so that a process holding several apps, a producer of two deployments or
    the tests, gives each its own, and a forked child never uses its parent's)."""
    pid = os.getpid()
    held = getattr(app, "llm_context", None)
    if held is None or held[0] != pid:
        with _lock:
            held = getattr(app, "llm_context", None)
            if held is None or held[0] != pid:
                held = (pid, build_context(app_config(app), app.conf.broker_transport_options))
                app.llm_context = held
    return cast(WorkerContext, held[1])

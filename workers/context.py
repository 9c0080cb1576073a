"""Per-process worker resources, built lazily after the pool forks.

Each worker process (a prefork child, or the one process of a threads pool) gets its own
Redis client, limiter, parking lot, provider clients and runner. They are never shared
across a fork.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import redis
from celery import Celery

from throttle.config import Config
from throttle.keys import KeyBuilder
from throttle.limiter import RedisLimiter
from throttle.parking import ParkingLot
from throttle.scheduler import FairScheduler
from throttle.scripts import Scripts
from workers.runtime import ClientPool, CompletionRunner, SleeperGate

#: Threads per worker process, set by the worker bootstep; 1 for prefork children.
_pool_threads = 1


def set_pool_threads(count: int) -> None:
    global _pool_threads
    _pool_threads = max(1, count)


@dataclass
class WorkerContext:
    config: Config
    client: redis.Redis
    limiter: RedisLimiter
    parking: ParkingLot
    runner: CompletionRunner
    scheduler: FairScheduler


_lock = threading.Lock()
_contexts: dict[int, WorkerContext] = {}


def redis_client(config: Config) -> redis.Redis:
    timeout = config.redis.socket_timeout_s
    return redis.Redis.from_url(
        config.redis.url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        max_connections=max(8, _pool_threads * 2),
    )


def build_context(config: Config) -> WorkerContext:
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
        fair_scheduler(config, limiter),
    )


def fair_scheduler(config: Config, limiter: RedisLimiter) -> FairScheduler:
    worker = config.worker
    return FairScheduler(
        limiter,
        config.scheduler.lanes,
        release_lead_s=worker.release_lead_s,
        # items give up at their throttle deadline; their keys outlive it
        queue_ttl_s=worker.throttle_deadline_s + config.celery.visibility_timeout_s + 3600,
    )


def worker_context(app: Celery) -> WorkerContext:
    """This process's context (built on first use in each process)."""
    from workers.app import app_config

    pid = os.getpid()
    context = _contexts.get(pid)
    if context is None:
        with _lock:
            context = _contexts.get(pid)
            if context is None:
                context = build_context(app_config(app))
                _contexts.clear()  # entries inherited from a parent process
                _contexts[pid] = context
    return context

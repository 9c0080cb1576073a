"""The fixed sections ``[redis]``, ``[celery]``, ``[worker]`` and ``[scheduler]``, each
read into its settings and checked as a whole."""

from __future__ import annotations

import re
from typing import Any

from throttle.config.checks import section, table
from throttle.config.settings import (
    FAILURE_POLICIES,
    CelerySettings,
    Lane,
    RedisSettings,
    SchedulerSettings,
    WorkerSettings,
)
from throttle.errors import ConfigError

#: A lane's name: 1-32 of letters, digits, _ . -
_LANE_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,32}$")


def redis_settings(raw: Any) -> RedisSettings:
    """``[redis]``: its keys, and a known ``failure_policy``."""
    settings: RedisSettings = section(RedisSettings, raw, "redis")
    if settings.failure_policy not in FAILURE_POLICIES:
        raise ConfigError(f"redis.failure_policy: expected one of {FAILURE_POLICIES}")
    return settings


def celery_settings(raw: Any) -> CelerySettings:
    """``[celery]``: its keys, each of its type."""
    settings: CelerySettings = section(CelerySettings, raw, "celery")
    return settings


def worker_settings(raw: Any) -> WorkerSettings:
    """``[worker]``: its keys, and times that fit together (all in seconds)."""
    worker: WorkerSettings = section(WorkerSettings, raw, "worker")
    if worker.hold_horizon_s < 0 or worker.throttle_deadline_s <= 0:
        raise ConfigError("worker: hold_horizon_s must be >= 0 and throttle_deadline_s > 0")
    if worker.release_stale_s <= worker.release_lead_s:
        raise ConfigError("worker: release_stale_s must exceed release_lead_s")
    if not 0 <= worker.pause_jitter_min_s <= worker.pause_jitter_max_s:
        raise ConfigError("worker: need 0 <= pause_jitter_min_s <= pause_jitter_max_s")
    return worker


def scheduler_settings(raw: Any) -> SchedulerSettings:
    """``[scheduler]``: its lanes, highest first, each lower one's ``min_share``, and the
    default lane."""
    spec = table(raw, "scheduler")
    unknown = sorted(set(spec) - {"lanes", "min_share", "default_lane", "publish_in_redis"})
    if unknown:
        raise ConfigError(
            f"scheduler: unknown key(s) {unknown};"
            " known: default_lane, lanes, min_share, publish_in_redis"
        )
    publish_in_redis = spec.get("publish_in_redis", True)
    if not isinstance(publish_in_redis, bool):
        raise ConfigError("scheduler.publish_in_redis: expected true or false")
    names = spec.get("lanes", ["interactive", "batch"])
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        raise ConfigError("scheduler.lanes: expected a non-empty list of lane names")
    bad = [n for n in names if not _LANE_NAME.match(n)]
    if bad or len(set(names)) != len(names):
        raise ConfigError(
            f"scheduler.lanes: names must be distinct, 1-32 of letters, digits, _ . - ({names!r})"
        )
    shares = dict(  # a copy: the caller's table stays as it was
        table(
            spec.get("min_share", {"batch": 0.1} if "lanes" not in spec else {}),
            "scheduler.min_share",
        )
    )
    lanes = []
    for k, name in enumerate(names):
        share = shares.pop(name, 0.0)
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share < 1:
            raise ConfigError(f"scheduler.min_share.{name}: expected a number in [0, 1)")
        if k == 0 and share:
            raise ConfigError(f"scheduler.min_share.{name}: the highest lane needs no share")
        lanes.append(Lane(name, float(share)))
    if shares:
        raise ConfigError(f"scheduler.min_share: no such lane(s) {sorted(shares)}")
    if sum(lane.min_share for lane in lanes) >= 1:
        raise ConfigError("scheduler.min_share: the shares must add up to less than 1")
    default = spec.get("default_lane", names[0])
    if not isinstance(default, str) or default not in names:
        raise ConfigError(f"scheduler.default_lane: {default!r} is not in scheduler.lanes")
    return SchedulerSettings(tuple(lanes), default, publish_in_redis)

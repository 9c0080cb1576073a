"""The dispatcher of parked tasks, on a real Redis: what a released task is told to wait."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import pytest
import redis

from throttle.config import config_from_dict
from throttle.keys import KeyBuilder
from throttle.limiter import EPOCH_MS, Observed, RedisLimiter
from throttle.parking import ParkingLot
from workers.dispatcher import Dispatcher

pytestmark = pytest.mark.integration


def test_a_task_parked_before_the_rate_rose_is_released_at_its_new_slot(
    redis_client: redis.Redis, key_prefix: str
) -> None:
    config = config_from_dict(
        {
            "redis": {"prefix": key_prefix},
            "providers": {"emu": {"profile": "openai", "base_url": "http://127.0.0.1:9"}},
            "groups": {"g": {"provider": "emu", "models": ["m"], "requests": "40/s"}},
        }
    )
    keys = KeyBuilder(key_prefix)
    limiter = RedisLimiter(redis_client, keys=keys)
    lot = ParkingLot(redis_client, keys)
    group = config.limit_group(config.groups["g"])
    first = limiter.admit(group, {"requests": 1})
    limiter.settle(group, first.reservation, {}, {"requests": Observed(0, 10)})
    queue = [limiter.admit(group, {"requests": 1}) for _ in range(12)]
    last = queue[-1]
    lot.park("g", "t.1", last.slot_ms, {"slot_ms": last.slot_ms})
    # The provider now reports 4x the limit: the queue, parked slots too, shrinks 4x.
    limiter.settle(group, queue[0].reservation, {}, {"requests": Observed(0, 40)})
    score = redis_client.zscore(keys.parked("g"), "t.1")
    assert score is not None
    lead_s = config.worker.release_lead_s
    time.sleep(max(0.0, (score + EPOCH_MS - limiter.server_time_ms()) / 1000 - lead_s) + 0.01)
    waits: list[float] = []

    def publish(payload: Mapping[str, Any], wait_s: float, group: str, entry_id: str) -> None:
        assert (group, entry_id) == ("g", "t.1")
        waits.append(wait_s)

    Dispatcher(config, lot, publish).run_once()
    still_s = (last.slot_ms - limiter.server_time_ms()) / 1000
    assert len(waits) == 1
    assert still_s > 0.5, "the slot it was parked with is still far"
    assert waits[0] <= lead_s, "it waits for its new slot, not the old one"


def test_a_released_entry_is_forgotten_only_when_a_worker_claims_it(
    redis_client: redis.Redis, key_prefix: str
) -> None:
    """The Redis broker hands a message over with BRPOP before the worker records it as
    unacknowledged: a worker killed in between loses it. So a released entry waits in
    `releasing` until claimed, and one never claimed is released again after the stale
    time. Of two releases, the copy that arrives first runs; the broker redelivering
    that same message after its worker died runs it again."""
    keys = KeyBuilder(key_prefix)
    lot = ParkingLot(redis_client, keys)
    seconds, micros = redis_client.time()
    now_ms = seconds * 1000 + micros / 1000
    lot.park("g", "task-a.1", now_ms, {"task_id": "task-a"})
    first = lot.take_due("g", lead_s=0.05)
    assert [entry_id for entry_id, _ in first.entries] == ["task-a.1"]
    # The message is lost: nobody claims it. Within the stale time it is not released...
    assert lot.take_due("g", lead_s=0.05, stale_s=30).entries == ()
    # ...after it, it is, with its payload.
    time.sleep(0.02)
    again = lot.take_due("g", lead_s=0.05, stale_s=0.01)
    assert again.entries == (("task-a.1", {"task_id": "task-a"}),)
    assert lot.claim("g", "task-a.1", "second-release", marker_ttl_s=60), "first to arrive runs"
    assert not lot.claim("g", "task-a.1", "first-release", marker_ttl_s=60), "a late copy does not"
    assert lot.claim("g", "task-a.1", "second-release", marker_ttl_s=60), (
        "the claiming message delivered again (its worker died running it) runs again"
    )
    assert redis_client.exists(keys.releasing("g"), keys.parked("g")) == 0
    assert not redis_client.hexists(keys.parked_payloads("g"), "task-a.1")

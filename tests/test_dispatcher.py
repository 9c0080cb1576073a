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
    limiter.settle(group, first.reservation_id, {}, {"requests": Observed(0, 10)})
    queue = [limiter.admit(group, {"requests": 1}) for _ in range(12)]
    last = queue[-1]
    lot.park("g", "t.1", last.slot_ms, {"slot_ms": last.slot_ms})
    # The provider now reports 4x the limit: the queue, parked slots too, shrinks 4x.
    limiter.settle(group, queue[0].reservation_id, {}, {"requests": Observed(0, 40)})
    score = redis_client.zscore(keys.parked("g"), "t.1")
    assert score is not None
    lead_s = config.worker.release_lead_s
    time.sleep(max(0.0, (score + EPOCH_MS - limiter.server_time_ms()) / 1000 - lead_s) + 0.01)
    waits: list[float] = []

    def publish(payload: Mapping[str, Any], wait_s: float) -> None:
        waits.append(wait_s)

    Dispatcher(config, lot, publish).run_once()
    still_s = (last.slot_ms - limiter.server_time_ms()) / 1000
    assert len(waits) == 1
    assert still_s > 0.5, "the slot it was parked with is still far"
    assert waits[0] <= lead_s, "it waits for its new slot, not the old one"

"""Many processes share one schedule: safety under contention and clock independence.

Each process admits requests with random costs through its own client, sleeps until its
slot, and records the slot. From all recorded starts, no window may hold more than the
bucket allows (capacity + rate x window length), whoever admitted what.
"""

from __future__ import annotations

import multiprocessing
import random
import time
from unittest import mock

import pytest

from testing.conformance import worst_excess
from throttle.connect import connect
from throttle.keys import KeyBuilder
from throttle.limiter import RedisLimiter
from throttle.limits import LimitGroup

pytestmark = pytest.mark.integration

SPECS = {"requests": "40/s", "tokens": "3000/s"}
Event = tuple[str, float, dict[str, float]]


def hammer(
    redis_url: str, prefix: str, groups: list[str], duration_s: float, seed: int, shift_s: float
) -> list[Event]:
    """One worker process: admit, sleep to the slot, record. Its clock is off by shift_s."""
    real_time = time.time
    with mock.patch("time.time", lambda: real_time() + shift_s):
        client = connect(redis_url)
        limiter = RedisLimiter(client, keys=KeyBuilder(prefix))
        limit_groups = [LimitGroup.from_specs(name, SPECS) for name in groups]
        rng = random.Random(seed)
        events: list[Event] = []
        stop_at = time.monotonic() + duration_s
        while time.monotonic() < stop_at:
            group = rng.choice(limit_groups)
            costs = {"requests": 1.0, "tokens": float(rng.randint(1, 400))}
            admission = limiter.admit(group, costs, max_wait_s=1.0)
            if not admission.reserved:
                time.sleep(0.02)
                continue
            events.append((group.name, admission.slot_ms, costs))
            time.sleep(admission.wait_s)
        client.close()
        return events


def run_workers(
    redis_url: str, prefix: str, groups: list[str], shifts: list[float], duration_s: float
) -> list[Event]:
    context = multiprocessing.get_context("fork")
    jobs = [
        (redis_url, prefix, groups, duration_s, seed, shift) for seed, shift in enumerate(shifts)
    ]
    with context.Pool(len(jobs)) as pool:
        per_worker = pool.starmap(hammer, jobs)
    return [event for events in per_worker for event in events]


def assert_conforms(events: list[Event], group_name: str, duration_s: float) -> None:
    group = LimitGroup.from_specs(group_name, SPECS)
    mine = [(slot, costs) for name, slot, costs in events if name == group_name]
    for dim in group.dimensions:
        schedule = [(slot, costs[dim.name]) for slot, costs in mine]
        rate_per_ms = dim.capacity / dim.period_ms
        excess = worst_excess(schedule, dim.capacity, rate_per_ms)
        # Slots are kept to the microsecond: allow what 2 us of refill brings, no more.
        assert excess <= rate_per_ms * 0.002 + 1e-9, (
            f"{group_name}/{dim.name} admitted {excess:.3f} too much"
        )
    # The test must have pushed the limit: tokens bind at close to their rate.
    tokens = sum(costs["tokens"] for _, costs in mine)
    span_s = (max(s for s, _ in mine) - min(s for s, _ in mine)) / 1000
    assert tokens >= 0.8 * 3000 * span_s, f"limit never bound: {tokens} tokens in {span_s:.2f}s"
    assert span_s >= 0.5 * duration_s


def test_eight_processes_never_exceed_one_group(redis_url: str, key_prefix: str) -> None:
    events = run_workers(redis_url, key_prefix, ["solo"], [0.0] * 8, duration_s=3.0)
    assert len({round(slot, 3) for _, slot, _ in events}) == len(events)
    assert_conforms(events, "solo", 3.0)


def test_eight_processes_never_exceed_two_interleaved_groups(
    redis_url: str, key_prefix: str
) -> None:
    events = run_workers(redis_url, key_prefix, ["left", "right"], [0.0] * 8, duration_s=3.0)
    assert_conforms(events, "left", 3.0)
    assert_conforms(events, "right", 3.0)


def test_skewed_local_clocks_share_one_schedule(redis_url: str, key_prefix: str) -> None:
    shifts = [-30.0, -30.0, -10.0, 0.0, 10.0, 30.0, 30.0, 30.0]
    events = run_workers(redis_url, key_prefix, ["skewed"], shifts, duration_s=2.0)
    assert_conforms(events, "skewed", 2.0)

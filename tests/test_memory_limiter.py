"""The in-memory limiter (``throttle/memory.py``) keeps the Redis limiter's contract:
the same steps answer the same, in the same units."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from throttle.keys import KeyBuilder
from throttle.limiter import Admission, BeginOutcome, Observed, RedisLimiter
from throttle.limits import Algorithm, Dimension, LimitGroup
from throttle.memory import MemoryLimiter
from throttle.model import LimiterModel
from throttle.ports import Limiter


def mixed_group(name: str) -> LimitGroup:
    return LimitGroup(
        name,
        (
            Dimension.parse("requests", "5/s"),
            Dimension.parse("tokens", "1000/2s"),
            Dimension("window", 3, 1.0, Algorithm.SLIDING),
        ),
        concurrency=2,
    )


def steps(limiter: Limiter, group: LimitGroup) -> list[object]:
    """One walk through every step the runner takes; what each answered, in units a
    second implementation can match (waits rounded to 50 ms)."""

    def answer(admission: Admission) -> tuple[bool, float, bool, str | None]:
        wait_s = round(admission.wait_s * 20) / 20
        return admission.reserved, wait_s, admission.lease, admission.binding

    seen: list[object] = []
    first = limiter.admit(group, {"requests": 1, "tokens": 100, "window": 1})
    second = limiter.admit(group, {"requests": 1, "tokens": 100, "window": 1})
    third = limiter.admit(group, {"requests": 1, "tokens": 100, "window": 1})
    seen += [answer(first), answer(second), answer(third)]
    seen.append(answer(limiter.admit(group, {"window": 1}, max_wait_s=0.05)))
    seen.append(limiter.begin(group, third.reservation).outcome)  # two leases held
    seen.append(limiter.settle(group, first.reservation, {"tokens": -50}) is not None)
    seen.append(limiter.settle(group, first.reservation, {"tokens": -50}))  # finished
    seen.append(limiter.begin(group, third.reservation).outcome)  # a lease came back
    seen.append(limiter.cancel(group, second.reservation) is not None)
    pause = limiter.pause(group, 2.0, rate_limited=True)
    seen += [round(pause.wait_s, 1), pause.decreased, pause.multiplier]
    seen.append(limiter.begin(group, third.reservation).outcome)
    seen.append(limiter.start_wait_s(group, {"requests": 1})[0] > 1.5)  # the pause
    settled = limiter.settle(group, third.reservation, {}, {"requests": Observed(4.0, 5.0)})
    seen.append(settled is not None and settled.multiplier)
    seen.append(limiter.queued_work(group.name))
    return seen


@pytest.mark.integration
def test_the_memory_limiter_answers_each_step_as_the_redis_limiter(
    redis_client: redis.Redis, key_prefix: str
) -> None:
    real = RedisLimiter(redis_client, keys=KeyBuilder(key_prefix))
    memory = MemoryLimiter(LimiterModel(real.server_time_ms))

    assert steps(memory, mixed_group("g")) == steps(real, mixed_group("g"))


class Clock:
    def __init__(self) -> None:
        self.now_ms = 0.0

    def __call__(self) -> float:
        return self.now_ms


def memory_limiter() -> tuple[MemoryLimiter, Clock]:
    clock = Clock()
    return MemoryLimiter(LimiterModel(clock)), clock


def test_begin_waits_for_a_sliding_window_that_moved_on() -> None:
    """A task that starts late finds the window ending now full: its entry stays where
    it was and begin says how long until the oldest entry leaves."""
    limiter, clock = memory_limiter()
    group = LimitGroup("w", (Dimension("window", 2, 1.0, Algorithm.SLIDING),))
    late = limiter.admit(group, {"window": 1})
    clock.now_ms = 1500.0  # its entry is out of the window; two others fill it
    limiter.admit(group, {"window": 1})
    clock.now_ms = 1600.0
    limiter.admit(group, {"window": 1})

    begun = limiter.begin(group, late.reservation)

    assert begun.outcome is BeginOutcome.WINDOW_FULL
    assert begun.wait_s == pytest.approx(
        (1500 + group.window_ms(group.dimensions[0]) - 1600) / 1000, abs=1e-5
    )


def test_a_tenant_cap_far_away_is_not_reserved_under_a_tenant_bound() -> None:
    limiter, _clock = memory_limiter()
    group = LimitGroup(
        "t",
        (Dimension.parse("requests", "100/s"), Dimension.parse("tenant.a.requests", "1/s")),
    )
    costs = {"requests": 1, "tenant.a.requests": 1}
    limiter.admit(group, costs)
    limiter.admit(group, costs)  # the tenant's bucket is empty now

    bounded = limiter.admit(group, costs, max_wait_s=5.0, tenant_max_wait_s=0.1)
    unbounded = limiter.admit(group, costs, max_wait_s=5.0)

    assert (bounded.reserved, bounded.binding) == (False, "tenant.a.requests")
    assert unbounded.reserved


RESULTS: dict[str, Callable[[MemoryLimiter, LimitGroup], object]] = {
    "cancel of an unknown handle": lambda lim, g: lim.cancel(g, "nope"),
    "settle of an unknown handle": lambda lim, g: lim.settle(g, "nope", {}),
}


@pytest.mark.parametrize("step", sorted(RESULTS))
def test_unknown_handles_finish_nothing(step: str) -> None:
    limiter, _clock = memory_limiter()
    assert RESULTS[step](limiter, mixed_group("u")) is None

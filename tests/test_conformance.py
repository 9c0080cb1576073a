"""The schedule checker used by the contention tests (pure logic)."""

from __future__ import annotations

import itertools
import random

from hypothesis import given
from hypothesis import strategies as st

from testing.conformance import worst_excess


def brute_force(events: list[tuple[float, float]], capacity: float, rate: float) -> float:
    ordered = sorted(events)
    best = float("-inf")
    for i, j in itertools.combinations_with_replacement(range(len(ordered)), 2):
        window = sum(cost for t, cost in ordered if ordered[i][0] <= t <= ordered[j][0])
        best = max(best, window - capacity - rate * (ordered[j][0] - ordered[i][0]))
    return best


def test_a_paced_schedule_conforms_and_a_burst_does_not() -> None:
    paced = [(i * 100.0, 1.0) for i in range(50)]
    assert worst_excess(paced, capacity=1, rate_per_ms=0.01) <= 1e-9
    burst = [*paced, (250.0, 1.0)]
    assert worst_excess(burst, capacity=1, rate_per_ms=0.01) > 0.5


@given(
    st.lists(
        st.tuples(st.integers(0, 1000).map(float), st.integers(1, 50).map(float)),
        min_size=1,
        max_size=25,
    ),
    st.integers(1, 100).map(float),
    st.floats(0.0, 1.0),
)
def test_matches_brute_force(
    events: list[tuple[float, float]], capacity: float, rate: float
) -> None:
    assert abs(worst_excess(events, capacity, rate) - brute_force(events, capacity, rate)) < 1e-6


def test_order_of_events_does_not_matter() -> None:
    rng = random.Random(7)
    events = [(rng.uniform(0, 1000), rng.uniform(0, 10)) for _ in range(200)]
    shuffled = events[:]
    rng.shuffle(shuffled)
    assert worst_excess(events, 20, 0.05) == worst_excess(shuffled, 20, 0.05)

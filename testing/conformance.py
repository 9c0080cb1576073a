"""Check a recorded schedule against a token bucket: did any window admit too much?

A sequence of (start, cost) events conforms to a bucket of ``capacity`` refilling at
``rate`` when, for every window between two starts t_i <= t_j, the cost started in it
is at most ``capacity + rate * (t_j - t_i)``. :func:`worst_excess` returns the largest
amount by which any window goes over (<= 0 means the schedule conforms), in O(n log n).
"""

from __future__ import annotations

from collections.abc import Iterable


def worst_excess(
    events: Iterable[tuple[float, float]], capacity: float, rate_per_ms: float
) -> float:
    """Largest ``sum(cost in [t_i, t_j]) - capacity - rate * (t_j - t_i)`` over all windows.

    ``events`` are (start_ms, cost) pairs in any order.
    """
    ordered = sorted(events)
    best = float("-inf")
    # For a window ending at event j: prefix_j - r*t_j + max over i<=j of (r*t_i - prefix_{i-1}).
    best_start = float("-inf")
    prefix = 0.0
    for start_ms, cost in ordered:
        best_start = max(best_start, rate_per_ms * start_ms - prefix)
        prefix += cost
        best = max(best, prefix - rate_per_ms * start_ms + best_start - capacity)
    return best

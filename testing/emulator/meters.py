"""Quota meters: what a provider keeps per limit dimension.

* :class:`ContinuousBucket` - capacity ``C`` refilled continuously at ``C / window_s``
  (OpenAI, Anthropic, Gemini). The level may go negative after a post-hoc debit.
* :class:`SlidingLog` - every debit returns exactly ``window_s`` after it was made
  (Azure's rolling token window and its 10-s request window).

Meters are pure: every method takes the current time ``now_s`` in seconds.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Protocol


class Meter(Protocol):
    """One limit dimension's state. Units are the dimension's (requests or tokens)."""

    @property
    def capacity(self) -> float: ...

    @property
    def window_s(self) -> float: ...

    @property
    def rate_per_s(self) -> float: ...

    def level(self, now_s: float) -> float:
        """Units available now (``capacity`` when idle)."""
        ...

    def wait_s(self, cost: float, now_s: float) -> float:
        """Seconds until ``cost`` units fit; 0 when they fit now."""
        ...

    def time_to_full_s(self, now_s: float) -> float:
        """Seconds until the meter is back to full capacity."""
        ...

    def debit(self, amount: float, now_s: float) -> None:
        """Take ``amount`` units (negative gives them back). No admission check."""
        ...

    def set_limit(self, capacity: float, window_s: float, now_s: float) -> None:
        """Change the limit in place; the level is clamped to the new capacity."""
        ...


class ContinuousBucket:
    """A token bucket: level ``L = min(C, L + r * dt)`` with ``r = C / window_s``.

    >>> bucket = ContinuousBucket(60, 60.0, now_s=0.0)
    >>> bucket.debit(60, 0.0); bucket.wait_s(1, 0.0)
    1.0
    """

    __slots__ = ("_capacity", "_last_s", "_level", "_rate_per_s", "_window_s")

    def __init__(self, capacity: float, window_s: float, now_s: float) -> None:
        self._capacity = float(capacity)
        self._window_s = float(window_s)
        self._rate_per_s = self._capacity / self._window_s
        self._level = self._capacity
        self._last_s = now_s

    @property
    def capacity(self) -> float:
        return self._capacity

    @property
    def window_s(self) -> float:
        return self._window_s

    @property
    def rate_per_s(self) -> float:
        return self._rate_per_s

    def _refill(self, now_s: float) -> float:
        elapsed_s = now_s - self._last_s
        if elapsed_s > 0:
            self._level = min(self._capacity, self._level + elapsed_s * self._rate_per_s)
            self._last_s = now_s
        return self._level

    def level(self, now_s: float) -> float:
        return self._refill(now_s)

    def wait_s(self, cost: float, now_s: float) -> float:
        return max(0.0, (cost - self._refill(now_s)) / self._rate_per_s)

    def time_to_full_s(self, now_s: float) -> float:
        return max(0.0, (self._capacity - self._refill(now_s)) / self._rate_per_s)

    def debit(self, amount: float, now_s: float) -> None:
        self._refill(now_s)
        self._level = min(self._capacity, self._level - amount)

    def set_limit(self, capacity: float, window_s: float, now_s: float) -> None:
        self._refill(now_s)
        self._capacity = float(capacity)
        self._window_s = float(window_s)
        self._rate_per_s = self._capacity / self._window_s
        self._level = min(self._level, self._capacity)


class SlidingLog:
    """A sliding-window log: each debit counts for exactly ``window_s`` seconds.

    >>> log = SlidingLog(10, 60.0)
    >>> log.debit(10, 0.0); log.wait_s(1, 5.0)
    55.0
    """

    __slots__ = ("_capacity", "_entries", "_used", "_window_s")

    def __init__(self, capacity: float, window_s: float) -> None:
        self._capacity = float(capacity)
        self._window_s = float(window_s)
        self._entries: deque[tuple[float, float]] = deque()
        self._used = 0.0

    @property
    def capacity(self) -> float:
        return self._capacity

    @property
    def window_s(self) -> float:
        return self._window_s

    @property
    def rate_per_s(self) -> float:
        return self._capacity / self._window_s

    def _expire(self, now_s: float) -> None:
        entries = self._entries
        horizon_s = now_s - self._window_s
        while entries and entries[0][0] <= horizon_s:
            self._used -= entries.popleft()[1]
        if not entries:
            self._used = 0.0  # drop accumulated float error

    def level(self, now_s: float) -> float:
        self._expire(now_s)
        return self._capacity - self._used

    def wait_s(self, cost: float, now_s: float) -> float:
        self._expire(now_s)
        missing = cost - (self._capacity - self._used)
        if missing <= 0:
            return 0.0
        for at_s, amount in self._entries:
            missing -= amount
            if missing <= 1e-9:
                return max(0.0, at_s + self._window_s - now_s)
        return self._window_s if math.isfinite(cost) else math.inf

    def time_to_full_s(self, now_s: float) -> float:
        self._expire(now_s)
        if not self._entries:
            return 0.0
        return max(0.0, self._entries[-1][0] + self._window_s - now_s)

    def debit(self, amount: float, now_s: float) -> None:
        self._expire(now_s)
        self._entries.append((now_s, amount))
        self._used += amount

    def set_limit(self, capacity: float, window_s: float, now_s: float) -> None:
        self._capacity = float(capacity)
        self._window_s = float(window_s)
        self._expire(now_s)

"""Clocks for the emulator: the real monotonic clock or a manual one tests advance.

Both give seconds (``now_s``) on an arbitrary origin; only differences matter. The wall
clock is used solely for the ``date`` header and RFC 3339 resets, anchored once
(:class:`WallTime`).
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

from testing.emulator.formats import http_date


class Clock(Protocol):
    """A monotonic source of seconds."""

    def now_s(self) -> float: ...


class MonotonicClock:
    """The process's ``time.monotonic()``."""

    def now_s(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that only moves when :meth:`advance` is called. Thread-safe."""

    def __init__(self, start_s: float = 0.0) -> None:
        self._now_s = start_s
        self._lock = threading.Lock()

    def now_s(self) -> float:
        return self._now_s

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds`` (>= 0) and return the new time in seconds."""
        if seconds < 0:
            raise ValueError("a monotonic clock cannot go back")
        with self._lock:
            self._now_s += seconds
            return self._now_s


class WallTime:
    """Unix time for readings of a monotonic clock, anchored once, and the ``date`` header.

    Not thread-safe: the engine calls it under its lock.
    """

    def __init__(self, clock_s: float, epoch_s: float | None = None) -> None:
        #: (Unix time, clock reading) at the same instant.
        self._anchor_s = (time.time() if epoch_s is None else epoch_s, clock_s)
        self._date = (-1, "")

    def wall_s(self, now_s: float) -> float:
        """Unix time at clock reading ``now_s``."""
        epoch_s, clock_s = self._anchor_s
        return epoch_s + (now_s - clock_s)

    def date(self, wall_s: float) -> str:
        """The ``date`` header for Unix time ``wall_s`` (formatted once per second)."""
        second = int(wall_s)
        if self._date[0] != second:
            self._date = (second, http_date(wall_s))
        return self._date[1]

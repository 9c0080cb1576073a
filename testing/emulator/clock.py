"""Clocks for the emulator: the real monotonic clock or a manual one tests advance.

Both give seconds (``now_s``) on an arbitrary origin; only differences matter. The wall
clock is used solely for the ``date`` header and RFC 3339 resets, anchored once.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


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

"""The batch runner's progress line: throughput over a window and an ETA."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from tools.demo_progress import format_duration


@dataclass
class Throughput:
    """Completions per second over the last ``window_s`` seconds."""

    window_s: float = 10.0
    _events: deque[tuple[float, int]] = field(default_factory=deque)

    def add(self, now_s: float, count: int) -> None:
        if count:
            self._events.append((now_s, count))
        while self._events and self._events[0][0] < now_s - self.window_s:
            self._events.popleft()

    def rate_per_s(self, now_s: float, started_s: float) -> float:
        # At least a second: the first records of a resumed run land all at once.
        span_s = max(1.0, min(self.window_s, now_s - started_s))
        return sum(c for t, c in self._events if t >= now_s - self.window_s) / span_s


def format_progress(done: int, total: int, errors: int, rate_per_s: float, width: int = 24) -> str:
    """``[#####-----] 120/200 60% 3 errors 12.5/s ETA 0:06``."""
    fraction = done / total if total else 1.0
    filled = int(fraction * width)
    eta = format_duration((total - done) / rate_per_s) if rate_per_s > 0 else "?"
    if done >= total:
        eta = "0:00"
    return (
        f"[{'#' * filled}{'-' * (width - filled)}] {done}/{total} {fraction:4.0%} "
        f"{errors} errors {rate_per_s:.1f}/s ETA {eta}"
    )

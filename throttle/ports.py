"""What a completion runner (``workers/runtime.py``) needs of a limiter.

Two implement it: :class:`throttle.limiter.RedisLimiter`, shared by every worker, and
:class:`throttle.memory.MemoryLimiter`, the in-memory model on a clock of the caller's,
for unit tests. Both answer with the same result types.

Units: durations are seconds (``max_wait_s``, ``duration_s``, ``Admission.wait_s``,
``Begin.wait_s``); instants are ms on the limiter's clock (``Admission.slot_ms`` and
``now_ms``, ``Pause.until_ms``, :meth:`Limiter.server_time_ms`), the Redis server's for
the Redis limiter. Costs and deltas are units of each dimension, by dimension name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from throttle.limits import LimitGroup
from throttle.reservation import Admission, Begin, Observed, Pause, Settled


class Limiter(Protocol):
    """Admission with reserved start slots over a group's dimensions, the pause gate,
    and the settle of what a call really used (see :mod:`throttle.limiter` for the
    semantics of each step)."""

    def admit(
        self,
        group: LimitGroup,
        costs: Mapping[str, float],
        *,
        max_wait_s: float | None = None,
        tenant_max_wait_s: float | None = None,
    ) -> Admission:
        """Reserve the earliest slot for ``costs``; with ``max_wait_s``, reserve none
        further away (nor while work waits in the group's fair queue)."""
        ...

    def begin(self, group: LimitGroup, reservation: str) -> Begin:
        """At the slot: check the pause gate, take the concurrency lease."""
        ...

    def cancel(self, group: LimitGroup, reservation: str) -> float | None:
        """Give a reservation back; when it was done (ms), None if already finished."""
        ...

    def settle(
        self,
        group: LimitGroup,
        reservation: str,
        deltas: Mapping[str, float] | None = None,
        observed: Mapping[str, Observed] | None = None,
    ) -> Settled | None:
        """Finish a reservation with ``actual - reserved`` per dimension and what the
        provider's headers said; None if it was already finished."""
        ...

    def pause(self, group: LimitGroup, duration_s: float, *, rate_limited: bool = False) -> Pause:
        """Close the group's gate for ``duration_s`` (never shortens a longer pause);
        ``rate_limited``: a 429, which lowers the group's rate once per epoch."""
        ...

    def server_time_ms(self) -> float:
        """The limiter's clock, ms."""
        ...

    def start_wait_s(self, group: LimitGroup, costs: Mapping[str, float]) -> tuple[float, int]:
        """How long ``costs`` would wait to start if admitted now (infinite while work
        waits in the group's fair queue), and how many items wait there."""
        ...

    def queued_work(self, group: str) -> int:
        """Items waiting in ready flows of the group's fair queue."""
        ...

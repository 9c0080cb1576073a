"""An in-memory :class:`~throttle.ports.Limiter`: the reference model
(:class:`~throttle.model.LimiterModel`) behind the Redis limiter's interface.

It answers in the Redis limiter's units and result types, on the model's clock (ms, a
fake one in tests), so a runner can be driven through admissions, pauses and settles
without Redis. One thread at a time; for tests, not for sharing between workers.

Example::

    clock = FakeClock()
    limiter = MemoryLimiter(LimiterModel(clock.ms))
    admission = limiter.admit(group, {"requests": 1, "tokens": 1200})
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

from throttle.limits import LimitGroup
from throttle.model import LimiterModel
from throttle.ports import Limiter
from throttle.reservation import Admission, Begin, BeginOutcome, Observed, Pause, Settled
from throttle.scheduler_model import FairSchedulerModel


class MemoryLimiter:
    """A :class:`~throttle.ports.Limiter` over ``model``. Reservation handles are bare
    ids (``m1``, ``m2``...). ``scheduler``: the fair queue whose waiting work makes a
    bounded admission yield (``binding == "queue"``), as the Redis group's ``b`` does;
    without one, no work ever waits there."""

    def __init__(self, model: LimiterModel, scheduler: FairSchedulerModel | None = None) -> None:
        self.model = model
        self.scheduler = scheduler
        self._ids = itertools.count(1)

    def admit(
        self,
        group: LimitGroup,
        costs: Mapping[str, float],
        *,
        max_wait_s: float | None = None,
        tenant_max_wait_s: float | None = None,
    ) -> Admission:
        now_ms = self.model.clock()
        rid = f"m{next(self._ids)}"
        if max_wait_s is not None and self.queued_work(group.name) > 0:
            return Admission(group.name, rid, False, 0.0, now_ms, now_ms, False, "queue")
        tenant_ms = None
        if max_wait_s is not None and tenant_max_wait_s is not None:
            tenant_ms = tenant_max_wait_s * 1000
        got = self.model.admit(
            group,
            costs,
            rid,
            now_ms=now_ms,
            max_wait_ms=None if max_wait_s is None else max_wait_s * 1000,
            tenant_max_wait_ms=tenant_ms,
        )
        return Admission(
            group.name,
            rid,
            got.reserved,
            max(0.0, got.wait_ms) / 1000,
            got.slot_ms,
            now_ms,
            got.lease,
            got.binding,
        )

    def begin(self, group: LimitGroup, reservation: str) -> Begin:
        now_ms = self.model.clock()
        got = self.model.begin(group, reservation, now_ms=now_ms)
        return Begin(BeginOutcome(got.code), got.wait_ms / 1000, now_ms)

    def cancel(self, group: LimitGroup, reservation: str) -> float | None:
        now_ms = self.model.clock()
        return now_ms if self.model.cancel(group, reservation, now_ms=now_ms) else None

    def settle(
        self,
        group: LimitGroup,
        reservation: str,
        deltas: Mapping[str, float] | None = None,
        observed: Mapping[str, Observed] | None = None,
    ) -> Settled | None:
        now_ms = self.model.clock()
        heard = {
            name: (o.remaining, o.limit, o.granularity) for name, o in (observed or {}).items()
        }
        if not self.model.settle(group, reservation, deltas or {}, observed=heard, now_ms=now_ms):
            return None
        return Settled(now_ms, self.model.multiplier(group))

    def pause(self, group: LimitGroup, duration_s: float, *, rate_limited: bool = False) -> Pause:
        now_ms = self.model.clock()
        st = self.model.groups.get(group.name)
        before = st.last_decrease_ms if st else None
        duration_ms = max(0, int(duration_s * 1000))  # pause.lua's whole ms
        until_ms = self.model.pause(group, duration_ms, rate_limited=rate_limited, now_ms=now_ms)
        decreased = self.model.groups[group.name].last_decrease_ms != before
        return Pause(until_ms, now_ms, decreased, self.model.multiplier(group))

    def server_time_ms(self) -> float:
        return self.model.clock()

    def start_wait_s(self, group: LimitGroup, costs: Mapping[str, float]) -> tuple[float, int]:
        queued = self.queued_work(group.name)
        if queued > 0:
            return math.inf, queued
        return self.model.start_wait_ms(group, costs) / 1000, 0

    def queued_work(self, group: str) -> int:
        queue = self.scheduler.queues.get(group) if self.scheduler else None
        return queue.ready_n if queue else 0


if TYPE_CHECKING:  # mypy checks that it keeps to the protocol
    _conforms: Limiter = MemoryLimiter(LimiterModel())

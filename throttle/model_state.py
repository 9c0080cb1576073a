"""The in-memory state of :class:`throttle.model.LimiterModel`, one group at a time, and
the rates it implies. Times are milliseconds, stored as the Lua scripts store them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from throttle.errors import CostExceedsCapacityError
from throttle.limits import Algorithm, LimitGroup, effective_capacity


def stored_ms(x: float) -> float:
    """Values are stored to the microsecond, as the Lua scripts store them."""
    return round(x, 3)


def stored_tat(x: float) -> float:
    """GCRA TATs are stored in whole µs rounded up (``tat_text`` in lib/common.lua)."""
    return math.ceil(x * 1000 - 0.001) / 1000


def rescaled(tat: float, now: float, tolerance: float, factor: float) -> float:
    """A TAT after the rate changed by ``factor`` (old / new): the level in units is
    kept; the queue beyond now + tolerance stretches or shrinks."""
    return tat if tat <= now else now + tolerance + (tat - now - tolerance) * factor


def check_capacity(group: LimitGroup, vector: Sequence[float]) -> None:
    """CostExceedsCapacityError for a cost no bucket of ``group`` can ever hold."""
    for dim, cost in zip(group.dimensions, vector, strict=True):
        if cost > group.usable_capacity(dim) + 1e-9:
            raise CostExceedsCapacityError(group.name, dim.name, cost, group.usable_capacity(dim))


@dataclass
class Entry:
    """What a reservation took from one dimension (a handle's record, lib/record.lua)."""

    algorithm: Algorithm
    cost: float
    post: float | None = None
    emission_ms: float = 0.0
    where: str | float | None = None  # calendar window start, or sliding entry id


@dataclass
class Record:
    slot_ms: float
    entries: list[Entry]
    expires_ms: float


@dataclass
class GroupState:
    """One group's state hash, sliding logs, calendar windows and leases."""

    tat: dict[str, float] = field(default_factory=dict)
    log: dict[str, list[tuple[float, str, float]]] = field(default_factory=dict)
    windows: dict[str, dict[int, float]] = field(default_factory=dict)
    pause_ms: float = 0.0
    multiplier: float = 1.0
    epoch_end_ms: float = float("-inf")
    last_decrease_ms: float | None = None
    last_increase_ms: float | None = None
    learned: dict[str, float] = field(default_factory=dict)
    leases: dict[str, float] = field(default_factory=dict)
    records: dict[str, Record] = field(default_factory=dict)

    def tat_at(self, group: LimitGroup, name: str, now: float) -> float:
        """A dimension's TAT; a group without state starts ``cold_start`` full."""
        if name not in self.tat:
            dim = group.dimensions[group.index(name)]
            return now + dim.period_ms * (1.0 - group.headroom) * (1.0 - group.cold_start)
        return self.tat[name]

    def effective_capacity(
        self, group: LimitGroup, i: int, multiplier: float | None = None
    ) -> float:
        dim = group.dimensions[i]
        m = self.multiplier if multiplier is None else multiplier
        return effective_capacity(dim, self.learned.get(dim.name), m)

    def multiplier_ceiling(self, group: LimitGroup) -> float:
        """An auto group's multiplier grows beyond 1 only while some auto dimension has
        not heard its limit."""
        unheard = [d for d in group.dimensions if d.auto and d.name not in self.learned]
        return group.multiplier_ceiling if unheard else 1.0

    def emission_ms(self, group: LimitGroup, i: int) -> float:
        return group.dimensions[i].period_ms / self.effective_capacity(group, i)

    def rescale(self, group: LimitGroup, now: float, old: float, new: float) -> None:
        """The multiplier moves from ``old`` to ``new``: each bucket's queue follows its
        own rate (a dimension with a learned limit feels no multiplier above 1)."""
        for i, dim in enumerate(group.dimensions):
            tat = self.tat.get(dim.name)
            if dim.algorithm is Algorithm.GCRA and tat is not None and tat > now:
                tolerance = dim.period_ms * (1.0 - group.headroom)
                factor = self.effective_capacity(group, i, old) / self.effective_capacity(
                    group, i, new
                )
                self.tat[dim.name] = stored_tat(rescaled(tat, now, tolerance, factor))


@dataclass(frozen=True)
class ModelAdmission:
    reserved: bool
    wait_ms: float
    slot_ms: float
    lease: bool
    binding: str | None
    #: Nothing reserved: the slot is within ``lease_ahead_ms`` but every concurrency
    #: lease is held (the fair scheduler releases an item only with its lease).
    lease_cap: bool = False


@dataclass(frozen=True)
class ModelBegin:
    """What :meth:`~throttle.model.LimiterModel.begin` found, as begin.lua's codes:
    0 go, 1 paused for ``wait_ms`` more, 2 no lease free, 3 a sliding window has no
    room before ``wait_ms``."""

    code: int
    wait_ms: float = 0.0

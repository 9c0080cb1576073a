"""All-or-nothing admission over a pool's meters (spec §8 "Admission").

1. Any cost above its dimension's capacity -> ``TOO_LARGE`` (terminal), no debit.
2. Every cost fits (and gated dimensions are above 0) -> ``ADMITTED``, all debited.
3. Otherwise -> ``RATE_LIMITED``, nothing debited except, with ``count_rejected``,
   one request from each request bucket holding at least one.

The dimension reported is the one with the largest wait; ties go to requests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from testing.emulator.meters import Meter


class Outcome(StrEnum):
    ADMITTED = "admitted"
    RATE_LIMITED = "rate_limited"
    TOO_LARGE = "too_large"


@dataclass(frozen=True)
class Verdict:
    """The decision and, when refused, the dimension that explains it."""

    outcome: Outcome
    dimension: str | None = None
    #: Seconds until the request would fit (0 when admitted or too large).
    wait_s: float = 0.0
    #: Cost, level before any debit, capacity and window of ``dimension``.
    requested: float = 0.0
    level: float = 0.0
    capacity: float = 0.0
    window_s: float = 0.0


@dataclass(frozen=True)
class Dim:
    """A dimension as admission sees it: its name, cost kind and meter."""

    name: str
    kind: str
    meter: Meter


def order_dims(dims: Sequence[Dim]) -> list[Dim]:
    """Request dimensions first, so that they win ties."""
    return sorted(dims, key=lambda dim: dim.kind != "requests")


def decide(
    dims: Sequence[Dim],
    costs: Mapping[str, float],
    now_s: float,
    *,
    gated: frozenset[str] = frozenset(),
) -> Verdict:
    """Judge a request with ``costs`` per cost kind against ``dims`` (in tie order)."""
    for dim in dims:
        cost = costs.get(dim.kind, 0.0)
        if cost > dim.meter.capacity:
            meter = dim.meter
            return Verdict(
                Outcome.TOO_LARGE, dim.name, 0.0, cost, meter.level(now_s), meter.capacity,
                meter.window_s,
            )  # fmt: skip
    worst: Verdict | None = None
    for dim in dims:
        meter = dim.meter
        cost = costs.get(dim.kind, 0.0)
        level = meter.level(now_s)
        if dim.kind in gated and level <= 0.0:
            wait_s = -level / meter.rate_per_s
        elif cost > level:
            wait_s = meter.wait_s(cost, now_s)
        else:
            continue
        if worst is None or wait_s > worst.wait_s:
            worst = Verdict(
                Outcome.RATE_LIMITED, dim.name, wait_s, cost, level, meter.capacity,
                meter.window_s,
            )  # fmt: skip
    return worst or Verdict(Outcome.ADMITTED)


def debit_all(dims: Sequence[Dim], costs: Mapping[str, float], now_s: float) -> dict[str, float]:
    """Debit every dimension its cost; returns the amount per dimension name."""
    debited: dict[str, float] = {}
    for dim in dims:
        cost = costs.get(dim.kind, 0.0)
        if cost:
            dim.meter.debit(cost, now_s)
            debited[dim.name] = cost
    return debited


def debit_rejected(dims: Sequence[Dim], now_s: float) -> dict[str, float]:
    """``count_rejected``: one request from each request bucket that holds one."""
    debited: dict[str, float] = {}
    for dim in dims:
        if dim.kind == "requests" and dim.meter.level(now_s) >= 1.0:
            dim.meter.debit(1.0, now_s)
            debited[dim.name] = 1.0
    return debited

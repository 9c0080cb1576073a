"""The live quota of one pool for one organization: a meter per limit dimension."""

from __future__ import annotations

import math
from collections.abc import Mapping

from testing.emulator.admission import Dim, order_dims
from testing.emulator.kinds import MeterKind
from testing.emulator.limits import LimitConfig, cost_kind
from testing.emulator.meters import ContinuousBucket, Meter, SlidingLog
from testing.emulator.profiles import DimSnapshot

#: Azure counts requests over a sixth of the window (10 s of a minute) at a sixth of RPM.
AZURE_REQUEST_WINDOW_FRACTION = 6


def meter_limit(dimension: str, limit: LimitConfig, meter: MeterKind) -> tuple[float, float]:
    """``(capacity, window_s)`` a meter enforces for a configured limit."""
    if meter is MeterKind.SLIDING and dimension == "requests":
        capacity = max(1.0, math.floor(limit.capacity / AZURE_REQUEST_WINDOW_FRACTION))
        return capacity, limit.window_s / AZURE_REQUEST_WINDOW_FRACTION
    return limit.capacity, limit.window_s


def make_meter(dimension: str, limit: LimitConfig, meter: MeterKind, now_s: float) -> Meter:
    capacity, window_s = meter_limit(dimension, limit, meter)
    if meter is MeterKind.SLIDING:
        return SlidingLog(capacity, window_s)
    return ContinuousBucket(capacity, window_s, now_s)


class PoolState:
    """Meters of ``label`` (``org/pool``), in admission (tie-break) order."""

    def __init__(
        self, label: str, limits: Mapping[str, LimitConfig], meter: MeterKind, now_s: float
    ) -> None:
        self.label = label
        self.meter_kind = meter
        self.dims: list[Dim] = []
        self.set_limits(limits, now_s)

    def set_limits(self, limits: Mapping[str, LimitConfig], now_s: float) -> None:
        """Change or add dimensions without notice; levels are clamped to new capacities."""
        by_name = {dim.name: dim for dim in self.dims}
        for name, limit in limits.items():
            if name in by_name:
                capacity, window_s = meter_limit(name, limit, self.meter_kind)
                by_name[name].meter.set_limit(capacity, window_s, now_s)
            else:
                meter = make_meter(name, limit, self.meter_kind, now_s)
                by_name[name] = Dim(name, cost_kind(name), meter)
        self.dims = order_dims(list(by_name.values()))

    def snapshots(self, now_s: float) -> list[DimSnapshot]:
        return [
            DimSnapshot(
                dim.name,
                dim.kind,
                dim.meter.capacity,
                dim.meter.window_s,
                dim.meter.level(now_s),
                dim.meter.time_to_full_s(now_s),
            )
            for dim in self.dims
        ]

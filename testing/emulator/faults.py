"""Which injected faults hit a request, and which scheduled limit changes are due.

Times are emulator seconds (since start or the last reset). Random faults draw from a
seeded generator so a run is reproducible for a given request order.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from testing.emulator.fault_config import FaultConfig
from testing.emulator.kinds import MODIFIER_KINDS, FaultKind

#: Announced wait of a fault kind when the config gives none (``None``: no retry-after).
DEFAULT_RETRY_AFTER_S: dict[FaultKind, float | None] = {
    FaultKind.RATE_LIMIT: 1.0,
    FaultKind.HUGE_RETRY_AFTER: 86_400.0,
    FaultKind.SLOW_DOWN: 1.0,
}


def announced_retry_after_s(fault: FaultConfig) -> float | None:
    """The retry-after a fault answer carries, if any."""
    if fault.retry_after_s is not None:
        return fault.retry_after_s
    return DEFAULT_RETRY_AFTER_S.get(fault.kind)


@dataclass
class _Armed:
    config: FaultConfig
    hits: int = 0
    applied: bool = False


@dataclass
class Selection:
    """The faults that hit one request: at most one replacement, any modifiers."""

    replacement: FaultConfig | None = None
    modifiers: list[FaultConfig] = field(default_factory=list)


class FaultSchedule:
    """The armed faults, with their hit counts."""

    def __init__(self, faults: Iterable[FaultConfig], seed: int) -> None:
        self._armed = [_Armed(fault) for fault in faults]
        self._rng = random.Random(seed)

    def add(self, faults: Iterable[FaultConfig], *, replace: bool = False) -> None:
        if replace:
            self._armed.clear()
        self._armed += [_Armed(fault) for fault in faults]

    def select(self, t_s: float, api_key: str, pool: str) -> Selection:
        """Faults active at ``t_s`` for this key and pool; counts their hits."""
        chosen = Selection()
        for armed in self._armed:
            fault = armed.config
            if fault.kind is FaultKind.LIMIT_CHANGE or not fault.active_at(t_s):
                continue
            if fault.api_key is not None and fault.api_key != api_key:
                continue
            if fault.pool is not None and fault.pool != pool:
                continue
            if fault.max_hits is not None and armed.hits >= fault.max_hits:
                continue
            is_modifier = fault.kind in MODIFIER_KINDS
            if not is_modifier and chosen.replacement is not None:
                continue
            if fault.probability < 1.0 and self._rng.random() >= fault.probability:
                continue
            armed.hits += 1
            if is_modifier:
                chosen.modifiers.append(fault)
            else:
                chosen.replacement = fault
        return chosen

    def due_limit_changes(self, t_s: float) -> list[FaultConfig]:
        """Limit changes whose time has come and that were not applied yet (in order)."""
        due: list[FaultConfig] = []
        for armed in self._armed:
            fault = armed.config
            if fault.kind is FaultKind.LIMIT_CHANGE and not armed.applied and t_s >= fault.start_s:
                armed.applied = True
                armed.hits += 1
                due.append(fault)
        return due

    def describe(self) -> list[dict[str, Any]]:
        return [{**armed.config.to_mapping(), "hits": armed.hits} for armed in self._armed]

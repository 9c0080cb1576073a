"""One injected fault as configured: its kind, when and whom it hits, how it answers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from testing.emulator.fields import (
    member,
    number,
    optional_int,
    optional_number,
    optional_str,
    reject_unknown,
)
from testing.emulator.kinds import FaultKind
from testing.emulator.limits import LimitConfig, limit_specs, parse_limits
from throttle.errors import ConfigError


@dataclass(frozen=True)
class FaultConfig:
    """One injected fault, active from ``start_s`` for ``duration_s`` (emulator seconds).

    ``probability`` < 1 makes it random (seeded); ``api_key`` / ``pool`` restrict it;
    ``max_hits`` stops it after that many affected requests. ``delay_ms``: the ``slow``
    modifier adds it to a normal answer; a replacing fault (a 429 storm...) is decided
    when the request arrives and answered that much later (requests in flight at once).
    """

    kind: FaultKind
    start_s: float = 0.0
    duration_s: float | None = None
    probability: float = 1.0
    api_key: str | None = None
    pool: str | None = None
    max_hits: int | None = None
    retry_after_s: float | None = None
    status: int | None = None
    delay_ms: float = 0.0
    should_retry: bool = True
    limits: Mapping[str, LimitConfig] = field(default_factory=dict)

    def active_at(self, t_s: float) -> bool:
        if t_s < self.start_s:
            return False
        return self.duration_s is None or t_s < self.start_s + self.duration_s

    @classmethod
    def from_mapping(cls, data: object, where: str, *, now_s: float = 0.0) -> FaultConfig:
        """Build from a table; ``after_s`` (instead of ``start_s``) is relative to ``now_s``."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a table")
        reject_unknown(data, {*cls.__dataclass_fields__, "after_s"}, where)
        kind = member(FaultKind, data.get("kind"), f"{where}.kind")
        start_s = number(data.get("start_s", 0.0), f"{where}.start_s")
        if "after_s" in data:
            start_s = now_s + number(data["after_s"], f"{where}.after_s")
        probability = number(data.get("probability", 1.0), f"{where}.probability")
        if not 0.0 <= probability <= 1.0:
            raise ConfigError(f"{where}.probability: must be within [0, 1]")
        limits = parse_limits(data.get("limits", {}), f"{where}.limits")
        if kind is FaultKind.LIMIT_CHANGE and not limits:
            raise ConfigError(f"{where}.limits: a limit_change needs limits")
        return cls(
            kind=kind,
            start_s=start_s,
            duration_s=optional_number(data.get("duration_s"), f"{where}.duration_s"),
            probability=probability,
            api_key=optional_str(data.get("api_key"), f"{where}.api_key"),
            pool=optional_str(data.get("pool"), f"{where}.pool"),
            max_hits=optional_int(data.get("max_hits"), f"{where}.max_hits"),
            retry_after_s=optional_number(data.get("retry_after_s"), f"{where}.retry_after_s"),
            status=optional_int(data.get("status"), f"{where}.status"),
            delay_ms=number(data.get("delay_ms", 0.0), f"{where}.delay_ms"),
            should_retry=bool(data.get("should_retry", True)),
            limits=limits,
        )

    def to_mapping(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind.value, "start_s": self.start_s}
        for name in ("duration_s", "api_key", "pool", "max_hits", "retry_after_s", "status"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        out.update(
            probability=self.probability, delay_ms=self.delay_ms, should_retry=self.should_retry
        )
        if self.limits:
            out["limits"] = limit_specs(self.limits)
        return out

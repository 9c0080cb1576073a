"""Emulated limits: ``capacity`` per ``window_s``, their text forms and dimension names.

Dimension names start with ``requests``, ``tokens``, ``input_tokens`` or
``output_tokens``; a suffix (``tokens_day``) names another bucket of the same kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from testing.emulator.fields import number
from throttle.errors import ConfigError
from throttle.limits import parse_rate

#: The cost kinds a dimension name can start with, longest first.
COST_KINDS: tuple[str, ...] = ("input_tokens", "output_tokens", "requests", "tokens")


def cost_kind(dimension: str) -> str:
    """The cost kind of a dimension name: ``tokens_day`` -> ``tokens``."""
    for kind in COST_KINDS:
        if dimension == kind or dimension.startswith(kind + "_"):
            return kind
    raise ConfigError(
        f"limit dimension {dimension!r}: name must start with one of {', '.join(COST_KINDS)}"
    )


@dataclass(frozen=True)
class LimitConfig:
    """``capacity`` units per ``window_s`` seconds."""

    capacity: float
    window_s: float

    @property
    def rate_per_s(self) -> float:
        return self.capacity / self.window_s

    @classmethod
    def parse(cls, value: object, where: str) -> LimitConfig:
        """From ``"60/s"``, ``"90k/min"``, ``"100/2s"`` or ``{capacity=, window_s=}``."""
        if isinstance(value, LimitConfig):
            return value
        if isinstance(value, str):
            try:
                rate, zone = parse_rate(value)
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from exc
            if zone is not None:
                raise ConfigError(f"{where}: calendar windows ('@ zone') are not emulated")
            return cls(rate.capacity, rate.period_s)
        if isinstance(value, Mapping):
            capacity = number(value.get("capacity"), f"{where}.capacity")
            window_s = number(value.get("window_s", 60.0), f"{where}.window_s")
            if capacity <= 0 or window_s <= 0:
                raise ConfigError(f"{where}: capacity and window_s must be positive")
            return cls(capacity, window_s)
        raise ConfigError(f"{where}: expected '60/s' or {{capacity, window_s}}, got {value!r}")

    def to_spec(self) -> str:
        return f"{self.capacity:.15g}/{self.window_s:.15g}s"


def parse_limits(value: object, where: str) -> dict[str, LimitConfig]:
    """A ``{dimension: spec}`` mapping, validated."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a table of dimension = limit")
    limits: dict[str, LimitConfig] = {}
    for dim, spec in value.items():
        try:
            cost_kind(str(dim))
        except ConfigError as exc:
            raise ConfigError(f"{where}.{dim}: {exc}") from exc
        limits[str(dim)] = LimitConfig.parse(spec, f"{where}.{dim}")
    return limits


def parse_limits_text(text: str, where: str = "--limits") -> dict[str, LimitConfig]:
    """``"requests=60/s,tokens=20000/s"`` -> limits."""
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        dim, sep, spec = item.partition("=")
        if not sep:
            raise ConfigError(f"{where}: {item!r} is not dimension=limit")
        pairs[dim.strip()] = spec.strip()
    return parse_limits(pairs, where)


def limit_specs(limits: Mapping[str, LimitConfig]) -> dict[str, str]:
    """``{dimension: "capacity/window_s s"}``: the text form :func:`parse_limits` reads."""
    return {dim: lim.to_spec() for dim, lim in limits.items()}

"""Checks of single values shared by every section's parsing.

Each raises :class:`~throttle.errors.ConfigError` naming where the value sits
(``where``: a dotted path such as ``groups.g``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from throttle.errors import ConfigError


def table(value: Any, where: str) -> dict[str, Any]:
    """A TOML table; an absent one (None) is empty."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a table")
    return value


def section(cls: type[Any], raw: Any, where: str) -> Any:
    """A settings dataclass from its table: only its own keys, each of its default's
    type (an integer passes for a float); absent keys keep their defaults."""
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    defaults = cls()
    values = {}
    for key, value in raw.items():
        expected = type(getattr(defaults, key))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if getattr(defaults, key) is not None and not isinstance(value, expected):
            raise ConfigError(f"{where}.{key}: expected {expected.__name__}, got {value!r}")
        values[key] = value
    return cls(**values)


def optional_seconds(spec: Mapping[str, Any], name: str, where: str) -> float | None:
    """``spec[name]`` as a number of seconds >= 0; None when absent."""
    value = spec.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ConfigError(f"{where}.{name}: expected a number of seconds >= 0, got {value!r}")
    return float(value)


def optional_positive_int(spec: Mapping[str, Any], name: str, where: str) -> int | None:
    """``spec[name]`` as an integer >= 1; None when absent."""
    value = spec.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}.{name}: expected a positive integer, got {value!r}")
    return value

"""Typed values out of a parsed TOML/JSON table, with errors that name the offending key."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from enum import StrEnum
from typing import TypeVar

from throttle.errors import ConfigError

_E = TypeVar("_E", bound=StrEnum)


def reject_unknown(data: Mapping[str, object], known: Collection[str], where: str) -> None:
    """Raise on the first key of ``data`` (in sorted order) that is not ``known``."""
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}")


def as_list(value: object, where: str) -> list[object]:
    """A list; ``None`` is an empty one."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list")
    return value


def number(value: object, where: str) -> float:
    """A finite int or float (not a bool), as a float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number")
    return float(value)


def optional_number(value: object, where: str) -> float | None:
    return None if value is None else number(value, where)


def optional_int(value: object, where: str) -> int | None:
    return None if value is None else int(number(value, where))


def optional_str(value: object, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ConfigError(f"{where}: expected a string")


def member(enum: type[_E], value: object, where: str) -> _E:
    """The member of ``enum`` whose value is ``value``; the error lists the choices."""
    try:
        return enum(str(value))
    except ValueError:
        choices = ", ".join(item.value for item in enum)
        raise ConfigError(f"{where}: {value!r} is not one of {choices}") from None

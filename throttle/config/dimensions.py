"""Dimensions: a group's or a tenant's limits, parsed from their TOML values.

A value is a rate such as ``"500/min"``, ``"auto"``, or a table with ``limit`` and
optionally ``algorithm``, ``timezone``, ``counts`` and ``start``. Periods are in
seconds, capacities in the units the dimension counts (``COST_KINDS``).
"""

from __future__ import annotations

from typing import Any

from throttle.config.checks import table
from throttle.config.settings import TenantPlan
from throttle.errors import ConfigError
from throttle.limits import Algorithm, Dimension, parse_auto, parse_rate

#: What each standard dimension name counts.
COST_KINDS = ("requests", "tokens", "input_tokens", "output_tokens")
#: Where an ``auto`` limit starts, per minute, by what it counts: low enough for any
#: paid tier, so the first responses' headers (or AIMD, without headers) raise it.
_AUTO_START_PER_MIN = {
    "requests": 60.0,
    "tokens": 20_000.0,
    "input_tokens": 20_000.0,
    "output_tokens": 4_000.0,
}
_DIMENSION_KINDS = {
    "requests": "requests",
    "requests_day": "requests",
    "tokens": "tokens",
    "tokens_day": "tokens",
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
}


def _auto_dimension(name: str, period_s: float, counts: str | None, start: Any) -> Dimension:
    """An ``auto`` limit: it starts at ``start`` (a spec such as ``"100/min"``) or at a
    conservative default for what it counts, scaled to its period."""
    if start is None:
        if counts not in _AUTO_START_PER_MIN:
            raise ConfigError("an auto limit needs counts = ... or a start such as '100/min'")
        capacity = _AUTO_START_PER_MIN[counts] * period_s / 60.0
    else:
        rate, _zone = parse_rate(str(start))
        capacity = rate.capacity * period_s / rate.period_s
    return Dimension(name, capacity, period_s, auto=True)


def dimension(where: str, name: str, spec: Any) -> tuple[Dimension, str]:
    """The dimension ``name`` of the table at ``where``, and what it counts (one of
    ``COST_KINDS``)."""
    try:
        if isinstance(spec, str):
            counts = _DIMENSION_KINDS.get(name)
            auto_period_s = parse_auto(spec)
            if auto_period_s is None:
                dim = Dimension.parse(name, spec)
            else:
                dim = _auto_dimension(name, auto_period_s, counts, None)
        elif isinstance(spec, dict):
            extra = sorted(set(spec) - {"limit", "algorithm", "timezone", "counts", "start"})
            if extra or "limit" not in spec:
                raise ConfigError(
                    f"{where}.{name}: a table needs 'limit' and may have algorithm, timezone,"
                    f" counts, start (got {sorted(spec)})"
                )
            auto_period_s = parse_auto(str(spec["limit"]))
            if auto_period_s is not None:
                if spec.get("algorithm", "gcra") != "gcra" or spec.get("timezone"):
                    raise ConfigError(f"{where}.{name}: auto limits use the gcra algorithm")
                counts = spec.get("counts", _DIMENSION_KINDS.get(name))
                dim = _auto_dimension(name, auto_period_s, counts, spec.get("start"))
                return _checked_counts(where, name, dim, counts)
            if "start" in spec:
                raise ConfigError(f"{where}.{name}: 'start' is for auto limits only")
            algorithm = spec.get("algorithm")
            if spec.get("timezone") and algorithm is None:
                algorithm = Algorithm.CALENDAR
            dim = Dimension.parse(name, str(spec["limit"]), algorithm)
            if spec.get("timezone"):
                dim = Dimension(name, dim.capacity, dim.period_s, dim.algorithm, spec["timezone"])
            counts = spec.get("counts", _DIMENSION_KINDS.get(name))
        else:
            raise ConfigError(f"{where}.{name}: expected a limit such as '500/min' or a table")
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(
            message if message.startswith(where) else f"{where}.{name}: {exc}"
        ) from exc
    return _checked_counts(where, name, dim, counts)


def _checked_counts(
    where: str, name: str, dim: Dimension, counts: str | None
) -> tuple[Dimension, str]:
    if counts not in COST_KINDS:
        raise ConfigError(
            f"{where}.{name}: cannot tell what it counts; name it one of"
            f" {sorted(_DIMENSION_KINDS)} or set counts = one of {COST_KINDS}"
        )
    return dim, counts


def tenant_plan(
    where: str, spec: Any, counts: dict[str, str], base: tuple[Dimension, ...] = ()
) -> TenantPlan:
    """A tenant plan's table (``weight`` and caps) at ``where``: its caps replace those
    of ``base`` of the same name; what each counts is added to ``counts``."""
    values = dict(table(spec, where))
    weight = values.pop("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight > 0:
        raise ConfigError(f"{where}.weight: expected a positive number, got {weight!r}")
    dims = {d.name: d for d in base}
    for key, value in values.items():
        dim, kind = dimension(where, key, value)
        if dim.auto:  # providers report no per-tenant limits to learn from
            raise ConfigError(f"{where}.{key}: a tenant's share needs a number, not auto")
        dims[key] = dim
        counts[key] = kind
    return TenantPlan(float(weight), tuple(dims.values()))

"""Parsing limit specs and building limit groups (pure logic)."""

from __future__ import annotations

import pytest

from throttle.errors import ConfigError, LimitSpecError, ThrottleError
from throttle.limits import Algorithm, Dimension, LimitGroup, parse_rate


@pytest.mark.parametrize(
    ("text", "capacity", "period_s"),
    [
        ("3500/min", 3500, 60),
        ("90k/min", 90_000, 60),
        ("10000/day", 10_000, 86_400),
        ("20/s", 20, 1),
        ("100/2s", 100, 2),
        ("1.5M/day", 1_500_000, 86_400),
        ("10_000 / hour", 10_000, 3600),
        ("1,000/minute", 1000, 60),
        ("5/250ms", 5, 0.25),
    ],
)
def test_parse_rate_accepts_human_forms(text: str, capacity: float, period_s: float) -> None:
    rate, zone = parse_rate(text)
    assert rate.capacity == capacity
    assert rate.period_s == pytest.approx(period_s)
    assert zone is None


@pytest.mark.parametrize(
    "text", ["", "90k", "/min", "abc/min", "10/fortnight", "0/min", "10/0s", "-5/min", "5m/min"]
)
def test_parse_rate_rejects_bad_specs_naming_the_text(text: str) -> None:
    with pytest.raises(LimitSpecError) as info:
        parse_rate(text)
    assert repr(text) in str(info.value)
    assert isinstance(info.value, ThrottleError)


def test_non_string_spec_is_a_typed_error() -> None:
    with pytest.raises(LimitSpecError):
        parse_rate(3500)  # type: ignore[arg-type]


def test_zone_suffix_makes_a_calendar_window() -> None:
    dim = Dimension.parse("requests_day", "10000/day @ America/Los_Angeles")
    assert dim.algorithm is Algorithm.CALENDAR
    assert dim.timezone == "America/Los_Angeles"


def test_unknown_zone_and_algorithm_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="Mars/Olympus"):
        Dimension.parse("d", "10/day @ Mars/Olympus")
    with pytest.raises(LimitSpecError, match="leaky"):
        Dimension.parse("d", "10/day", "leaky")


def test_emission_interval_is_period_over_capacity() -> None:
    dim = Dimension.parse("requests", "5000/min")
    assert dim.emission_interval_ms == pytest.approx(12.0)


def test_group_rejects_duplicates_and_bad_values() -> None:
    with pytest.raises(ConfigError, match="duplicate"):
        LimitGroup("g", (Dimension.parse("a", "1/s"), Dimension.parse("a", "2/s")))
    with pytest.raises(ConfigError, match="concurrency"):
        LimitGroup.from_specs("g", {"a": "1/s"}, concurrency=0)
    with pytest.raises(ConfigError, match="headroom"):
        LimitGroup.from_specs("g", {"a": "1/s"}, headroom=0.9)
    with pytest.raises(ConfigError, match="name"):
        LimitGroup.from_specs("bad{name}", {"a": "1/s"})
    with pytest.raises(ConfigError, match="no dimension"):
        LimitGroup("g", ())


def test_cost_vector_orders_costs_and_rejects_unknown_names() -> None:
    group = LimitGroup.from_specs("g", {"requests": "10/s", "tokens": "1k/s"})
    assert group.cost_vector({"tokens": 5}) == (0.0, 5.0)
    with pytest.raises(ConfigError, match="output_tokens"):
        group.cost_vector({"output_tokens": 1})
    with pytest.raises(ConfigError, match="finite"):
        group.cost_vector({"tokens": float("nan")})
    with pytest.raises(ConfigError, match="finite"):
        group.cost_vector({"tokens": -1})


def test_headroom_reduces_usable_capacity_only() -> None:
    group = LimitGroup.from_specs("g", {"tokens": "1000/s"}, headroom=0.02)
    dim = group.dimensions[0]
    assert group.usable_capacity(dim) == pytest.approx(980)
    assert dim.emission_interval_ms == pytest.approx(1.0)


def test_errors_rebuild_from_their_args_as_celery_does() -> None:
    from throttle import errors

    samples = [
        errors.LimitSpecError("9x/min", "bad"),
        errors.CostExceedsCapacityError("g", "tokens", 5000, 1000),
        errors.RateLimitedError("slow down", wait_s=3.0),
        errors.QuotaExhaustedError("insufficient_quota", status=429),
        errors.ThrottleDeadlineError("too late"),
    ]
    for exc in samples:
        rebuilt = type(exc)(*exc.args)
        assert type(rebuilt) is type(exc)
        assert str(rebuilt) == str(exc)

"""Parsing limit specs and building limit groups (pure logic)."""

from __future__ import annotations

import pytest

from throttle.errors import ConfigError, LimitSpecError, ThrottleError
from throttle.limits import (
    AUTO_MULTIPLIER_CEILING,
    Aimd,
    Algorithm,
    Dimension,
    LimitGroup,
    effective_capacity,
    parse_auto,
    parse_rate,
    raised_multiplier,
)


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


def test_effective_capacity_of_configured_and_auto_dimensions() -> None:
    configured, auto = Dimension("r", 600, 60.0), Dimension("r", 600, 60.0, auto=True)
    assert effective_capacity(configured, None, 0.5) == 300
    assert effective_capacity(configured, 400, 0.5) == 200, "a learned limit lowers"
    assert effective_capacity(configured, 900, 1.0) == 600, "but never raises"
    assert effective_capacity(auto, 900, 1.0) == 900, "auto follows it up"
    assert effective_capacity(auto, None, 8.0) == 4800, "discovery multiplies the start"
    assert effective_capacity(auto, 900, 8.0) == 900, "nothing passes a heard limit"


def test_raised_multiplier_is_additive_or_discovers() -> None:
    aimd = Aimd(increase=0.05)
    assert raised_multiplier(aimd, 0.6, 1.0, decreased=True) == pytest.approx(0.65)
    assert raised_multiplier(aimd, 0.98, 1.0, decreased=True) == 1.0
    assert raised_multiplier(aimd, 4.0, 1000.0, decreased=False) == 8.0, "slow start"
    assert raised_multiplier(aimd, 4.0, 1000.0, decreased=True) == pytest.approx(4.2)
    assert raised_multiplier(aimd, 900.0, 1000.0, decreased=False) == 1000.0


@pytest.mark.parametrize(
    ("text", "period_s"), [("auto", 60.0), ("auto/day", 86_400.0), (" auto / 10s ", 10.0)]
)
def test_auto_limits_parse_to_their_period(text: str, period_s: float) -> None:
    assert parse_auto(text) == period_s


def test_auto_limits_reject_bad_periods_and_other_algorithms() -> None:
    assert parse_auto("500/min") is None
    with pytest.raises(LimitSpecError, match="fortnight"):
        parse_auto("auto/fortnight")
    with pytest.raises(ConfigError, match="gcra"):
        Dimension("r", 10, 60.0, Algorithm.SLIDING, auto=True)
    group = LimitGroup("g", (Dimension("r", 10, 60.0, auto=True),))
    assert group.usable_capacity(group.dimensions[0]) == float("inf"), "no fail-fast bound"
    assert group.multiplier_ceiling == AUTO_MULTIPLIER_CEILING
    assert LimitGroup.from_specs("h", {"r": "10/min"}).multiplier_ceiling == 1.0

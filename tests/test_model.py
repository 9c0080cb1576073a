"""The reference model of the limiter's algorithms, on an injected clock (no sleeping)."""

from __future__ import annotations

import pytest

from throttle.errors import CostExceedsCapacityError
from throttle.limits import Algorithm, Dimension, LimitGroup
from throttle.model import LimiterModel

T0 = 1_800_000_000_000.0  # ms


def rate_group(**kwargs: object) -> LimitGroup:
    return LimitGroup.from_specs("g", {"requests": "10/s", "tokens": "1000/s"}, **kwargs)  # type: ignore[arg-type]


def test_full_bucket_admits_a_burst_then_spaces_by_emission_interval() -> None:
    model, group = LimiterModel(), rate_group()
    waits = [model.admit(group, {"requests": 1}, f"r{i}", now_ms=T0).wait_ms for i in range(13)]
    assert waits[:10] == [0.0] * 10
    assert waits[10:] == pytest.approx([100.0, 200.0, 300.0])


def test_slots_follow_the_dimension_that_binds() -> None:
    model, group = LimiterModel(), rate_group()
    first = model.admit(group, {"requests": 1, "tokens": 900}, "a", now_ms=T0)
    second = model.admit(group, {"requests": 1, "tokens": 300}, "b", now_ms=T0)
    assert first.wait_ms == 0
    assert second.wait_ms == pytest.approx(200.0)
    assert second.binding == "tokens"


def test_refill_is_continuous() -> None:
    model, group = LimiterModel(), rate_group()
    model.admit(group, {"tokens": 1000}, "a", now_ms=T0)
    assert model.level(group, "tokens", now_ms=T0 + 250) == pytest.approx(250)
    assert model.admit(group, {"tokens": 250}, "b", now_ms=T0 + 250).wait_ms == 0
    assert model.admit(group, {"tokens": 1}, "c", now_ms=T0 + 250).wait_ms == pytest.approx(1)


def test_max_wait_reserves_nothing() -> None:
    model, group = LimiterModel(), rate_group()
    model.admit(group, {"tokens": 1000}, "a", now_ms=T0)
    far = model.admit(group, {"tokens": 500}, "b", now_ms=T0, max_wait_ms=100)
    assert not far.reserved
    assert far.wait_ms == pytest.approx(500)
    assert model.admit(group, {"tokens": 500}, "c", now_ms=T0).wait_ms == pytest.approx(500)


def test_cost_above_capacity_fails_fast() -> None:
    with pytest.raises(CostExceedsCapacityError, match="tokens"):
        LimiterModel().admit(rate_group(), {"tokens": 1001}, "a", now_ms=T0)


def test_cancel_of_the_latest_reservation_restores_exactly() -> None:
    model, group = LimiterModel(), rate_group()
    model.admit(group, {"tokens": 600}, "a", now_ms=T0)
    model.admit(group, {"tokens": 600}, "b", now_ms=T0 + 10)
    assert model.cancel(group, "b", now_ms=T0 + 20)
    assert model.level(group, "tokens", now_ms=T0 + 20) == pytest.approx(420)
    assert not model.cancel(group, "b", now_ms=T0 + 20)


def test_cancel_of_an_older_reservation_refunds_its_cost() -> None:
    model, group = LimiterModel(), rate_group()
    model.admit(group, {"tokens": 600}, "a", now_ms=T0)
    model.admit(group, {"tokens": 600}, "b", now_ms=T0)
    assert model.level(group, "tokens", now_ms=T0) == pytest.approx(-200)
    assert model.cancel(group, "a", now_ms=T0)
    assert model.level(group, "tokens", now_ms=T0) == pytest.approx(400)


def test_settle_debits_into_debt_and_refunds_up_to_full() -> None:
    model, group = LimiterModel(), rate_group()
    model.admit(group, {"tokens": 500}, "a", now_ms=T0)
    assert model.settle(group, "a", {"tokens": 900}, now_ms=T0)
    assert model.level(group, "tokens", now_ms=T0) == pytest.approx(-400)
    assert model.admit(group, {"tokens": 100}, "b", now_ms=T0).wait_ms == pytest.approx(500)
    model.admit(group, {"tokens": 100}, "c", now_ms=T0 + 2000)
    assert model.settle(group, "c", {"tokens": -5000}, now_ms=T0 + 2000)
    assert model.level(group, "tokens", now_ms=T0 + 2000) == pytest.approx(1000)
    assert not model.settle(group, "c", {"tokens": 1}, now_ms=T0 + 2000)


def test_pause_gate_delays_every_slot_and_keeps_the_order() -> None:
    model, group = LimiterModel(), rate_group()
    model.pause(group, 3000, now_ms=T0)
    slots = [model.admit(group, {"requests": 1}, f"r{i}", now_ms=T0).slot_ms for i in range(12)]
    assert slots[0] == T0 + 3000
    assert slots[-1] == pytest.approx(T0 + 3000 + 100)
    assert slots == sorted(slots)


def test_sliding_log_returns_each_cost_one_window_after_its_start() -> None:
    model = LimiterModel()
    group = LimitGroup("az", (Dimension("tokens", 1000, 60.0, Algorithm.SLIDING),))
    model.admit(group, {"tokens": 700}, "a", now_ms=T0)
    model.admit(group, {"tokens": 300}, "b", now_ms=T0 + 10_000)
    late = model.admit(group, {"tokens": 500}, "c", now_ms=T0 + 20_000)
    assert late.slot_ms == pytest.approx(T0 + 60_000)
    assert model.level(group, "tokens", now_ms=T0 + 60_001) == pytest.approx(1000 - 300 - 500)


def test_calendar_window_resets_at_the_boundary() -> None:
    model = LimiterModel()
    dim = Dimension.parse("day", "3/day @ America/Los_Angeles")
    group = LimitGroup("g", (dim,))
    now = 1_795_000_000_000.0
    results = [model.admit(group, {"day": 1}, f"r{i}", now_ms=now) for i in range(4)]
    assert [r.wait_ms for r in results[:3]] == [0, 0, 0]
    fourth = results[3]
    assert fourth.slot_ms > now
    # the slot is a local midnight in Los Angeles
    from datetime import datetime
    from zoneinfo import ZoneInfo

    local = datetime.fromtimestamp(fourth.slot_ms / 1000, ZoneInfo("America/Los_Angeles"))
    assert (local.hour, local.minute, local.second) == (0, 0, 0)


def test_concurrency_leases_cap_in_flight_and_expire() -> None:
    model = LimiterModel()
    group = LimitGroup.from_specs("g", {"requests": "100/s"}, concurrency=2, lease_ttl_s=5)
    leases = [model.admit(group, {"requests": 1}, f"r{i}", now_ms=T0).lease for i in range(3)]
    assert leases == [True, True, False]
    assert model.admit(group, {"requests": 1}, "late", now_ms=T0 + 5001).lease

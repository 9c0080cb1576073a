"""Emulator meters and admission, pure: explicit times, no sleeping."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from testing.emulator.admission import (
    Dim,
    Outcome,
    debit_all,
    debit_rejected,
    decide,
    order_dims,
)
from testing.emulator.meters import ContinuousBucket, SlidingLog
from testing.emulator.stats import peak_window_sum


def test_bucket_reset_arithmetic_matches_openai_samples() -> None:
    tokens = ContinuousBucket(160_000, 60.0, now_s=0.0)
    tokens.debit(24, 0.0)
    assert tokens.level(0.0) == 159_976
    assert tokens.time_to_full_s(0.0) == pytest.approx(0.009)
    requests = ContinuousBucket(5000, 60.0, now_s=0.0)
    requests.debit(1, 0.0)
    assert requests.time_to_full_s(0.0) == pytest.approx(0.012)


def test_bucket_wait_of_the_18_642_s_sample() -> None:
    bucket = ContinuousBucket(30_000, 60.0, now_s=0.0)
    bucket.debit(14_567, 0.0)
    assert bucket.wait_s(24_754, 0.0) == pytest.approx(18.642)


def test_bucket_refills_continuously_and_caps_at_capacity() -> None:
    bucket = ContinuousBucket(10, 2.0, now_s=0.0)  # 5 per second
    bucket.debit(10, 0.0)
    assert bucket.level(1.0) == pytest.approx(5.0)
    assert bucket.level(100.0) == 10.0


def test_bucket_goes_negative_after_post_hoc_debit() -> None:
    bucket = ContinuousBucket(10, 1.0, now_s=0.0)
    bucket.debit(15, 0.0)
    assert bucket.level(0.0) == -5
    assert bucket.wait_s(1, 0.0) == pytest.approx(0.6)


def test_bucket_limit_change_clamps_level() -> None:
    bucket = ContinuousBucket(1000, 1.0, now_s=0.0)
    bucket.set_limit(10, 1.0, 0.0)
    assert bucket.level(0.0) == 10
    assert bucket.time_to_full_s(0.0) == 0.0


def test_sliding_log_returns_each_debit_one_window_later() -> None:
    log = SlidingLog(1000, 60.0)
    log.debit(600, 0.0)
    log.debit(300, 30.0)
    assert log.wait_s(500, 30.5) == pytest.approx(29.5)
    assert log.time_to_full_s(30.5) == pytest.approx(59.5)
    assert log.level(59.9) == pytest.approx(100)
    assert log.level(60.0) == pytest.approx(700)
    assert log.level(90.0) == 1000


def _dims(**capacities: float) -> list[Dim]:
    return order_dims(
        [
            Dim(name, name.split("_day")[0], ContinuousBucket(cap, 60.0, 0.0))
            for name, cap in capacities.items()
        ]
    )


def test_request_larger_than_capacity_is_terminal_and_debits_nothing() -> None:
    dims = _dims(tokens=30_000, requests=100)
    verdict = decide(dims, {"requests": 1, "tokens": 30_601}, 0.0)
    assert verdict.outcome is Outcome.TOO_LARGE
    assert (verdict.dimension, verdict.requested, verdict.capacity) == ("tokens", 30_601, 30_000)
    assert [d.meter.level(0.0) for d in dims] == [100, 30_000]


def test_admission_is_all_or_nothing() -> None:
    dims = _dims(requests=10, tokens=100)
    assert decide(dims, {"requests": 1, "tokens": 80}, 0.0).outcome is Outcome.ADMITTED
    debit_all(dims, {"requests": 1, "tokens": 80}, 0.0)
    verdict = decide(dims, {"requests": 1, "tokens": 50}, 0.0)
    assert verdict.outcome is Outcome.RATE_LIMITED
    assert verdict.dimension == "tokens"
    assert [d.meter.level(0.0) for d in dims] == [9, 20]


def test_count_rejected_debits_one_request_only() -> None:
    dims = _dims(requests=10, tokens=100)
    debit_all(dims, {"requests": 1, "tokens": 80}, 0.0)
    assert debit_rejected(dims, 0.0) == {"requests": 1.0}
    assert [d.meter.level(0.0) for d in dims] == [8, 20]


def test_largest_wait_is_reported_and_ties_go_to_requests() -> None:
    dims = _dims(tokens=60, requests=60)  # both 1 per second
    debit_all(dims, {"requests": 60, "tokens": 60}, 0.0)
    tie = decide(dims, {"requests": 1, "tokens": 1}, 0.0)
    assert tie.dimension == "requests" and tie.wait_s == pytest.approx(1.0)
    tokens = decide(dims, {"requests": 1, "tokens": 5}, 0.0)
    assert tokens.dimension == "tokens" and tokens.wait_s == pytest.approx(5.0)


def test_gated_dimension_must_be_above_zero() -> None:
    dims = _dims(requests=10, output_tokens=60)
    dims[1].meter.debit(61, 0.0)
    verdict = decide(
        dims, {"requests": 1, "output_tokens": 0}, 0.0, gated=frozenset({"output_tokens"})
    )
    assert verdict.dimension == "output_tokens" and verdict.wait_s == pytest.approx(1.0)


@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=2.0),
            st.integers(min_value=0, max_value=12),
            st.integers(min_value=0, max_value=150),
        ),
        max_size=40,
    )
)
def test_admission_never_overdraws_and_debits_all_or_nothing(
    steps: list[tuple[float, int, int]],
) -> None:
    dims = _dims(requests=10, tokens=100)
    now_s = 0.0
    for advance_s, requests, tokens in steps:
        now_s += advance_s
        costs = {"requests": float(requests), "tokens": float(tokens)}
        before = [d.meter.level(now_s) for d in dims]
        verdict = decide(dims, costs, now_s)
        if verdict.outcome is Outcome.ADMITTED:
            debit_all(dims, costs, now_s)
            after = [d.meter.level(now_s) for d in dims]
            assert after == pytest.approx([before[0] - requests, before[1] - tokens])
        else:
            assert [d.meter.level(now_s) for d in dims] == before
        for dim in dims:
            assert -1e-9 <= dim.meter.level(now_s) <= dim.meter.capacity


def test_peak_window_sum_is_a_sliding_maximum() -> None:
    debits = [(0.0, 8.0)] + [(0.125 * i, 1.0) for i in range(1, 9)]
    assert peak_window_sum(debits, 1.0) == 15.0  # t=1.0 falls outside [0, 1)
    assert peak_window_sum([], 1.0) == 0.0
    assert peak_window_sum([(0.0, 3.0), (5.0, 4.0)], 1.0) == 4.0


@given(
    st.lists(
        st.tuples(st.floats(min_value=0, max_value=10), st.floats(min_value=0, max_value=100)),
        max_size=30,
    ),
    st.floats(min_value=0.1, max_value=5),
)
def test_peak_window_sum_matches_brute_force(
    raw: list[tuple[float, float]], window_s: float
) -> None:
    debits = sorted(raw)
    brute = max(
        (sum(a for t, a in debits if start <= t < start + window_s) for start, _ in debits),
        default=0.0,
    )
    assert peak_window_sum(debits, window_s) == pytest.approx(brute)

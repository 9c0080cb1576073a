"""Header samples from providers.md, read into observations."""

from __future__ import annotations

import pytest

from throttle.providers.headers import (
    HeaderView,
    parse_anthropic_headers,
    parse_azure_headers,
    parse_groq_headers,
    parse_openai_headers,
)
from throttle.providers.observation import DimensionState, Observation
from throttle.providers.registry import get_profile

RECEIVED_AT = 1_740_435_945.0  # 2025-02-24T22:25:45Z

OPENAI_SAMPLE = {
    "x-ratelimit-limit-requests": "5000",
    "x-ratelimit-limit-tokens": "160000",
    "x-ratelimit-remaining-requests": "4999",
    "x-ratelimit-remaining-tokens": "159976",
    "x-ratelimit-reset-requests": "12ms",
    "x-ratelimit-reset-tokens": "9ms",
}


def test_openai_sample() -> None:
    obs = parse_openai_headers(OPENAI_SAMPLE, received_at=RECEIVED_AT)
    assert obs.received_at == RECEIVED_AT
    assert obs.get("requests") == DimensionState(5000, 4999, 0.012)
    assert obs.get("tokens") == DimensionState(160000, 159976, 0.009)
    assert obs.retry_after_s is None


def test_openai_reset_arithmetic_is_a_continuous_bucket() -> None:
    """(160000 - 159976) / (160000 / 60 s) = 9 ms; 1 / (5000 / 60 s) = 12 ms."""
    obs = parse_openai_headers(OPENAI_SAMPLE, received_at=RECEIVED_AT)
    tokens, requests = obs.get("tokens"), obs.get("requests")
    assert tokens is not None and requests is not None
    assert tokens.refill_rate_per_s == pytest.approx(160000 / 60)
    assert requests.refill_rate_per_s == pytest.approx(5000 / 60)
    assert tokens.implied_window_s == pytest.approx(60.0)
    assert requests.implied_window_s == pytest.approx(60.0)
    # Reset is time to FULL; the wait for a cost is the deficit over the rate.
    assert tokens.wait_for_s(159976, window_s=60) == 0.0
    assert tokens.wait_for_s(160000 + 24, window_s=60) == pytest.approx(48 / (160000 / 60))


def test_openai_tpd_bucket_is_recognisable_by_its_window() -> None:
    obs = parse_openai_headers(
        {
            "x-ratelimit-limit-tokens": "1500000",
            "x-ratelimit-remaining-tokens": "528800",
            "x-ratelimit-reset-tokens": "15h32m24.48s",
        },
        received_at=RECEIVED_AT,
    )
    tokens = obs.get("tokens")
    assert tokens is not None and tokens.reset_s == pytest.approx(55944.48)
    assert tokens.implied_window_s == pytest.approx(86400.0, rel=1e-3)


def test_header_names_are_case_insensitive() -> None:
    shouted = {name.upper(): value for name, value in OPENAI_SAMPLE.items()}
    mixed = [(name.title(), value) for name, value in OPENAI_SAMPLE.items()]
    expected = parse_openai_headers(OPENAI_SAMPLE, received_at=RECEIVED_AT)
    assert parse_openai_headers(shouted, received_at=RECEIVED_AT) == expected
    assert parse_openai_headers(mixed, received_at=RECEIVED_AT) == expected


@pytest.mark.parametrize("bad", ["-1", "", "lots", "NaN", "1e9", "-5ms"])
def test_garbage_values_are_unknown_not_errors(bad: str) -> None:
    obs = parse_openai_headers(
        {
            "x-ratelimit-limit-tokens": bad,
            "x-ratelimit-remaining-tokens": "100",
            "x-ratelimit-reset-tokens": bad,
            "retry-after": bad,
        },
        received_at=RECEIVED_AT,
    )
    assert obs.get("tokens") == DimensionState(None, 100, None)
    assert obs.retry_after_s is None


def test_missing_headers_give_an_empty_observation() -> None:
    obs = parse_openai_headers({}, received_at=RECEIVED_AT)
    assert obs.is_empty
    assert obs == Observation(RECEIVED_AT)


def test_retry_after_ms_wins_over_retry_after() -> None:
    headers = {"retry-after": "7", "retry-after-ms": "6250"}
    assert parse_azure_headers(headers, received_at=RECEIVED_AT).retry_after_s == 6.25
    assert parse_openai_headers({"retry-after": "20"}, received_at=0).retry_after_s == 20.0


def test_retry_after_http_date_uses_the_date_header() -> None:
    headers = {
        "date": "Mon, 24 Feb 2025 22:25:45 GMT",
        "retry-after": "Mon, 24 Feb 2025 22:26:15 GMT",
    }
    # received_at is deliberately far off: a skewed local clock must not matter.
    obs = parse_openai_headers(headers, received_at=RECEIVED_AT + 3600)
    assert obs.retry_after_s == 30.0


GROQ_SAMPLE = {
    "x-ratelimit-limit-requests": "14400",
    "x-ratelimit-limit-tokens": "18000",
    "x-ratelimit-remaining-requests": "14370",
    "x-ratelimit-remaining-tokens": "17997",
    "x-ratelimit-reset-requests": "2m59.56s",
    "x-ratelimit-reset-tokens": "7.66s",
}


def test_groq_request_headers_are_per_day() -> None:
    obs = parse_groq_headers(GROQ_SAMPLE, received_at=RECEIVED_AT)
    assert set(obs.dimensions) == {"requests_day", "tokens"}
    assert obs.get("requests_day") == DimensionState(14400, 14370, 179.56)
    assert obs.get("tokens") == DimensionState(18000, 17997, 7.66)
    assert get_profile("groq").parse_headers(GROQ_SAMPLE, received_at=RECEIVED_AT) == obs
    # The same headers read by the plain OpenAI profile mean per-minute requests.
    assert "requests" in get_profile("openai").parse_headers(GROQ_SAMPLE, received_at=0).dimensions


def test_azure_integer_second_resets() -> None:
    obs = parse_azure_headers(
        {
            "x-ratelimit-limit-requests": "120",
            "x-ratelimit-remaining-requests": "19",
            "x-ratelimit-limit-tokens": "20000",
            "x-ratelimit-remaining-tokens": "18000",
            "x-ratelimit-reset-requests": "10",
            "x-ratelimit-reset-tokens": "60",
            "retry-after": "7",
            "retry-after-ms": "7000",
        },
        received_at=RECEIVED_AT,
    )
    assert obs.get("requests") == DimensionState(120, 19, 10.0)
    assert obs.get("tokens") == DimensionState(20000, 18000, 60.0)
    assert obs.retry_after_s == 7.0


def test_azure_minus_one_headers_are_unknown() -> None:
    obs = parse_azure_headers(
        {"x-ratelimit-remaining-tokens": "-1", "x-ratelimit-remaining-requests": "0"},
        received_at=RECEIVED_AT,
    )
    assert obs.get("tokens") is None
    assert obs.get("requests") == DimensionState(None, 0, None)


ANTHROPIC_SAMPLE = {
    "date": "Mon, 24 Feb 2025 22:25:45 GMT",
    "anthropic-ratelimit-requests-limit": "50",
    "anthropic-ratelimit-requests-remaining": "49",
    "anthropic-ratelimit-requests-reset": "2025-02-24T22:25:47Z",
    "anthropic-ratelimit-input-tokens-limit": "80000",
    "anthropic-ratelimit-input-tokens-remaining": "78000",
    "anthropic-ratelimit-input-tokens-reset": "2025-02-24T22:25:47Z",
    "anthropic-ratelimit-output-tokens-limit": "16000",
    "anthropic-ratelimit-output-tokens-remaining": "12000",
    "anthropic-ratelimit-output-tokens-reset": "2025-02-24T22:26:00Z",
    "anthropic-ratelimit-tokens-limit": "96000",
    "anthropic-ratelimit-tokens-remaining": "90000",
    "anthropic-ratelimit-tokens-reset": "2025-02-24T22:25:47Z",
}


def test_anthropic_sample_reads_resets_against_the_date_header() -> None:
    # A worker clock an hour fast: resets must still come from the date header.
    obs = parse_anthropic_headers(ANTHROPIC_SAMPLE, received_at=RECEIVED_AT + 3600)
    assert obs.get("requests") == DimensionState(50, 49, 2.0, 1.0)
    assert obs.get("input_tokens") == DimensionState(80000, 78000, 2.0, 1000.0)
    assert obs.get("output_tokens") == DimensionState(16000, 12000, 15.0, 1000.0)
    assert obs.get("tokens") == DimensionState(96000, 90000, 2.0, 1000.0)


def test_anthropic_without_date_uses_receipt_time() -> None:
    headers = {k: v for k, v in ANTHROPIC_SAMPLE.items() if k != "date"}
    obs = parse_anthropic_headers(headers, received_at=RECEIVED_AT)
    assert obs.get("output_tokens") == DimensionState(16000, 12000, 15.0, 1000.0)


def test_anthropic_full_bucket_reset_before_date_reads_as_zero() -> None:
    obs = parse_anthropic_headers(
        {
            "date": "Mon, 24 Feb 2025 22:25:45 GMT",
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "50",
            "anthropic-ratelimit-requests-reset": "2025-02-24T22:25:44Z",
        },
        received_at=RECEIVED_AT,
    )
    assert obs.get("requests") == DimensionState(50, 50, 0.0, 1.0)


def test_anthropic_rounding_granularity_hides_a_false_rate() -> None:
    """Remaining rounded to 1,000: 'used 0' must not be read as a rate of zero."""
    state = DimensionState(80000, 80000, 2.0, 1000.0)
    assert state.refill_rate_per_s is None
    exhausted = Observation(0.0, {"output_tokens": DimensionState(16000, 0, 60.0, 1000.0)})
    assert exhausted.exhausted == ("output_tokens",)


def test_header_view_ignores_non_strings() -> None:
    view = HeaderView([("A", "1"), ("b", None), (None, "x"), ("a", "2")])  # type: ignore[list-item]
    assert view.get("a") == "1"
    assert "B" not in view
    assert "1" not in repr(view)

"""Classification of real 429 bodies and statuses (providers.md §2-5) into typed errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from throttle.errors import (
    ClientRequestError,
    OverloadedError,
    ProviderError,
    QuotaExhaustedError,
    RateLimitedError,
    RequestTooLargeError,
    TerminalProviderError,
    TransportError,
)
from throttle.providers.classify import ClassifyPolicy, classify_response, seconds_until_midnight
from throttle.providers.errorbody import parse_error_body
from throttle.providers.observation import DimensionState, Observation
from throttle.providers.registry import get_profile


def openai_error(message: str, type_: str, code: str) -> str:
    return json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}})


OPENAI_RPM = openai_error(
    "Rate limit reached for gpt-4o-mini in organization org-X on requests per min (RPM):"
    " Limit 3, Used 3, Requested 1. Please try again in 20s. Visit"
    " https://platform.openai.com/account/rate-limits to learn more.",
    "requests",
    "rate_limit_exceeded",
)
OPENAI_TPM = openai_error(
    "Rate limit reached for gpt-4o in organization org-X on tokens per min (TPM): Limit 30000,"
    " Used 14567, Requested 24754. Please try again in 18.642s. Visit …",
    "tokens",
    "rate_limit_exceeded",
)
OPENAI_TPD = openai_error(
    "Rate limit reached for gpt-4o in organization org-X on tokens per day (TPD): Limit 1500000,"
    " Used 1499000, Requested 2000. Please try again in 57.6s. Visit …",
    "tokens",
    "rate_limit_exceeded",
)
OPENAI_TOO_LARGE = openai_error(
    "Request too large for gpt-4o in organization org-X on tokens per min (TPM): Limit 30000,"
    " Requested 30601. The input or output tokens must be reduced in order to run successfully."
    " Visit …",
    "tokens",
    "rate_limit_exceeded",
)
OPENAI_QUOTA = openai_error(
    "You exceeded your current quota, please check your plan and billing details. For more"
    " information on this error, read the docs:"
    " https://platform.openai.com/docs/guides/error-codes/api-errors.",
    "insufficient_quota",
    "insufficient_quota",
)
ANTHROPIC_429 = json.dumps(
    {
        "type": "error",
        "error": {
            "type": "rate_limit_error",
            "message": "This request would exceed the rate limit for your organization of"
            " 20,000 input tokens per minute. For details, refer to:"
            " https://docs.anthropic.com/en/api/rate-limits. You can see the response headers"
            " for current usage.",
        },
        "request_id": "req_011",
    }
)
ANTHROPIC_SPEND_CAP = json.dumps(
    {
        "type": "error",
        "error": {
            "type": "rate_limit_error",
            "message": "You have reached your specified API usage limits.",
            "details": {"error_code": "enforced_spend_limit_reached"},
        },
    }
)
ANTHROPIC_529 = '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
AZURE_429 = json.dumps(
    {
        "error": {
            "code": "429",
            "message": "Requests to the ChatCompletions_Create Operation under Azure OpenAI API"
            " version 2024-08-01-preview have exceeded token rate limit of your current OpenAI"
            " S0 pricing tier. Please retry after 7 seconds. Please go here:"
            " https://aka.ms/oai/quotaincrease if you would like to further increase the"
            " default rate limit.",
        }
    }
)
AZURE_DAILY = json.dumps(
    {
        "error": {
            "code": "429",
            "message": "Requests to the ChatCompletions_Create Operation have exceeded call"
            " rate limit of your current pricing tier. Please retry after 86400 seconds.",
        }
    }
)


def gemini_429(quota_id: str, retry_delay: str | None = "37s") -> str:
    details: list[object] = [
        {
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [
                {
                    "quotaMetric": "generativelanguage.googleapis.com/"
                    "generate_content_free_tier_requests",
                    "quotaId": quota_id,
                    "quotaDimensions": {"location": "global", "model": "gemini-2.0-flash"},
                }
            ],
        },
        {"@type": "type.googleapis.com/google.rpc.Help", "links": [{"url": "https://x"}]},
    ]
    if retry_delay is not None:
        details.append(
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}
        )
    return json.dumps(
        {
            "error": {
                "code": 429,
                "message": "You exceeded your current quota, please check your plan and billing"
                " details.",
                "status": "RESOURCE_EXHAUSTED",
                "details": details,
            }
        }
    )


# Case: (status, headers, body, expected class, expected wait_s or None, dimension or None)
CASES: list[tuple[str, int, dict[str, str], str, type[ProviderError], float | None, str | None]] = [
    (
        "openai rpm, retry-after",
        429,
        {"retry-after": "20"},
        OPENAI_RPM,
        RateLimitedError,
        20.0,
        "requests",
    ),
    ("openai tpm, message only", 429, {}, OPENAI_TPM, RateLimitedError, 18.642, "tokens"),
    ("openai tpd", 429, {}, OPENAI_TPD, RateLimitedError, 57.6, "tokens_day"),
    (
        "retry-after-ms wins",
        429,
        {"retry-after-ms": "1500", "retry-after": "2"},
        OPENAI_TPM,
        RateLimitedError,
        1.5,
        "tokens",
    ),
    ("request too large", 429, {}, OPENAI_TOO_LARGE, RequestTooLargeError, None, None),
    ("insufficient quota", 429, {}, OPENAI_QUOTA, QuotaExhaustedError, None, None),
    (
        "anthropic itpm",
        429,
        {"retry-after": "3"},
        ANTHROPIC_429,
        RateLimitedError,
        3.0,
        "input_tokens",
    ),
    ("anthropic spend cap", 429, {}, ANTHROPIC_SPEND_CAP, QuotaExhaustedError, None, None),
    ("anthropic 529", 529, {}, ANTHROPIC_529, OverloadedError, None, None),
    (
        "anthropic 529 retry-after",
        529,
        {"retry-after": "10"},
        ANTHROPIC_529,
        OverloadedError,
        10.0,
        None,
    ),
    (
        "azure 429 headers",
        429,
        {"retry-after": "7", "retry-after-ms": "6500"},
        AZURE_429,
        RateLimitedError,
        6.5,
        None,
    ),
    ("azure 429 message", 429, {}, AZURE_429, RateLimitedError, 7.0, None),
    ("azure daily", 429, {"retry-after": "86400"}, AZURE_DAILY, QuotaExhaustedError, None, None),
    (
        "gemini per minute",
        429,
        {},
        gemini_429("GenerateRequestsPerMinutePerProjectPerModel-FreeTier"),
        RateLimitedError,
        37.0,
        None,
    ),
    (
        "gemini proto delay",
        429,
        {},
        gemini_429("GenerateRequestsPerMinutePerProjectPerModel", "57.238747106s"),
        RateLimitedError,
        57.238747106,
        None,
    ),
    (
        "503 overloaded",
        503,
        {},
        openai_error("The server is overloaded", "server_error", "server_is_overloaded"),
        OverloadedError,
        None,
        None,
    ),
    ("500", 500, {}, "oops", OverloadedError, None, None),
    (
        "slow_down",
        429,
        {},
        openai_error("Please slow down", "slow_down", "slow_down"),
        RateLimitedError,
        None,
        None,
    ),
    (
        "402 credits",
        402,
        {},
        '{"error":{"code":402,"message":"Insufficient credits"}}',
        QuotaExhaustedError,
        None,
        None,
    ),
    (
        "credit balance",
        400,
        {},
        openai_error("No credit", "invalid_request_error", "credit_balance_exhausted"),
        QuotaExhaustedError,
        None,
        None,
    ),
    (
        "org spend",
        429,
        {},
        openai_error("Spend", "x", "organization_spend_limit_exceeded"),
        QuotaExhaustedError,
        None,
        None,
    ),
    (
        "project spend",
        429,
        {},
        openai_error("Spend", "x", "project_spend_limit_exceeded"),
        QuotaExhaustedError,
        None,
        None,
    ),
    (
        "org usage",
        429,
        {},
        openai_error("Usage", "x", "organization_usage_limit_exceeded"),
        QuotaExhaustedError,
        None,
        None,
    ),
    (
        "400",
        400,
        {},
        openai_error("bad", "invalid_request_error", "x"),
        ClientRequestError,
        None,
        None,
    ),
    (
        "401",
        401,
        {},
        openai_error(
            "Incorrect API key provided: sk-abc123xyz789.",
            "invalid_request_error",
            "invalid_api_key",
        ),
        ClientRequestError,
        None,
        None,
    ),
    ("403", 403, {}, "", ClientRequestError, None, None),
    ("404", 404, {}, "<html>not found</html>", ClientRequestError, None, None),
    (
        "413",
        413,
        {},
        '{"type":"error","error":{"type":"request_too_large","message":"big"}}',
        RequestTooLargeError,
        None,
        None,
    ),
    ("408", 408, {}, "", TransportError, None, None),
    (
        "should-retry false on 429",
        429,
        {"x-should-retry": "false"},
        OPENAI_TPM,
        QuotaExhaustedError,
        None,
        None,
    ),
    (
        "should-retry false on 500",
        500,
        {"x-should-retry": "false"},
        "",
        TerminalProviderError,
        None,
        None,
    ),
    ("should-retry true on 400", 400, {"x-should-retry": "true"}, "", TransportError, None, None),
]


@pytest.mark.parametrize(
    ("status", "headers", "body", "expected", "wait_s", "dimension"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_classification_table(
    status: int,
    headers: dict[str, str],
    body: str,
    expected: type[ProviderError],
    wait_s: float | None,
    dimension: str | None,
) -> None:
    error = classify_response(status, headers, body, provider="p")
    assert type(error) is expected
    assert error.status == status
    if isinstance(error, RateLimitedError | OverloadedError):
        assert error.wait_s == (pytest.approx(wait_s) if wait_s is not None else None)
    if isinstance(error, RateLimitedError):
        assert error.dimension == dimension
    assert error.retryable is (expected in (RateLimitedError, OverloadedError, TransportError))


def test_success_is_not_an_error() -> None:
    assert classify_response(200, {}, "{}") is None
    assert classify_response(204, {}, None) is None


def test_the_18_642_second_example() -> None:
    """Limit 30000, Used 14567, Requested 24754: (14567 + 24754 - 30000) / 500 per s."""
    detail = parse_error_body(OPENAI_TPM).limit_detail
    assert detail is not None
    assert (detail.limit, detail.used, detail.requested) == (30000, 14567, 24754)
    assert detail.wait_s == pytest.approx(18.642)
    assert parse_error_body(OPENAI_TPM).try_again_in_s == pytest.approx(18.642)


def test_wait_from_arithmetic_when_no_try_again() -> None:
    body = openai_error(
        "Rate limit reached on tokens per min (TPM): Limit 30000, Used 14567, Requested 24754.",
        "tokens",
        "rate_limit_exceeded",
    )
    error = classify_response(429, {}, body)
    assert isinstance(error, RateLimitedError)
    assert error.wait_s == pytest.approx(18.642)


def test_day_long_wait_threshold_is_configurable() -> None:
    lenient = ClassifyPolicy(terminal_wait_s=100_000)
    error = classify_response(429, {"retry-after": "86400"}, AZURE_DAILY, policy=lenient)
    assert isinstance(error, RateLimitedError) and error.wait_s == 86400
    strict = ClassifyPolicy(terminal_wait_s=10)
    assert isinstance(
        classify_response(429, {"retry-after": "20"}, OPENAI_RPM, policy=strict),
        QuotaExhaustedError,
    )


def test_gemini_per_day_waits_until_midnight_pacific() -> None:
    # 2025-02-24 23:00 Pacific (UTC-8) = 2025-02-25 07:00 UTC: one hour to midnight.
    reference = datetime(2025, 2, 25, 7, 0, tzinfo=UTC)
    body = gemini_429("GenerateRequestsPerDayPerProjectPerModel-FreeTier", retry_delay=None)
    error = classify_response(429, {}, body, reference=reference)
    assert isinstance(error, RateLimitedError) and error.wait_s == pytest.approx(3600.0)
    # Earlier in the day the wait is over the threshold: terminal.
    morning = datetime(2025, 2, 24, 17, 0, tzinfo=UTC)  # 09:00 Pacific
    assert isinstance(classify_response(429, {}, body, reference=morning), QuotaExhaustedError)


def test_midnight_across_dst_change() -> None:
    # 2025-03-09 00:00 Pacific is PST; next midnight is after the spring-forward: 23 h.
    start = datetime(2025, 3, 9, 8, 0, tzinfo=UTC)
    assert seconds_until_midnight(start) == pytest.approx(23 * 3600)


def test_dimension_falls_back_to_the_exhausted_header_bucket() -> None:
    observation = Observation(0.0, {"output_tokens": DimensionState(16000, 0, 10.0, 1000.0)})
    body = '{"type":"error","error":{"type":"rate_limit_error","message":"Rate limited"}}'
    error = classify_response(429, {"retry-after": "4"}, body, observation=observation)
    assert isinstance(error, RateLimitedError)
    assert (error.wait_s, error.dimension) == (4.0, "output_tokens")


def test_messages_are_short_and_mask_keys() -> None:
    body = openai_error(
        "Incorrect API key provided: sk-proj-abcdefghijkl. " + "x" * 5000, "i", "invalid_api_key"
    )
    error = classify_response(401, {}, body, provider="openai")
    assert error is not None
    assert "sk-proj-abcdefghijkl" not in str(error)
    assert len(str(error)) < 500
    assert str(error).startswith("openai answered 401:")


def test_profiles_classify_with_their_name() -> None:
    error = get_profile("anthropic").classify(529, {}, ANTHROPIC_529)
    assert isinstance(error, OverloadedError) and "anthropic" in str(error)


def test_gemini_observation_carries_retry_delay() -> None:
    obs = get_profile("gemini").parse_observation(
        {}, gemini_429("PerMinute", "12.5s"), received_at=1.0
    )
    assert obs.retry_after_s == 12.5
    assert get_profile("gemini").parse_observation({}, "{}", received_at=1.0).is_empty

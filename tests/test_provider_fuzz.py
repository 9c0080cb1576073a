"""Hypothesis: no parser or classifier lets an exception escape, whatever it is fed."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from throttle.errors import ProviderError
from throttle.providers.classify import classify_response
from throttle.providers.durations import (
    parse_decimal,
    parse_go_duration,
    parse_http_date,
    parse_integer_seconds,
    parse_proto_duration,
    parse_retry_after_ms,
    parse_retry_after_s,
    parse_rfc3339,
)
from throttle.providers.errorbody import parse_error_body
from throttle.providers.observation import Observation
from throttle.providers.registry import get_profile, profile_names

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KNOWN_NAMES = (
    [
        f"{prefix}{kind}-{dim}"
        for prefix in ("x-ratelimit-",)
        for kind in ("limit", "remaining", "reset")
        for dim in ("requests", "tokens", "tokens_usage_based")
    ]
    + [
        f"anthropic-ratelimit-{dim}-{kind}"
        for dim in ("requests", "input-tokens", "output-tokens", "tokens")
        for kind in ("limit", "remaining", "reset")
    ]
    + ["retry-after", "retry-after-ms", "date", "x-should-retry"]
)

values = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "-1",
            "0",
            "12ms",
            "6m0s",
            "1e400",
            "NaN",
            "2025-02-24T22:25:47Z",
            "true",
            "Mon, 24 Feb 2025 22:25:47 GMT",
            "99999999999999999999",
            "0.000000001",
        ]
    ),
    st.from_regex(r"\A[0-9hmsuµnμ.:+\-TZ ]{0,24}\Z"),
)
header_maps = st.dictionaries(
    st.one_of(st.sampled_from(KNOWN_NAMES), st.text(max_size=20)).map(
        lambda name: name if len(name) % 2 else name.upper()
    ),
    values,
    max_size=12,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "error",
                    "message",
                    "code",
                    "type",
                    "status",
                    "details",
                    "violations",
                    "quotaId",
                    "retryDelay",
                    "error_code",
                    "usage",
                    "prompt_tokens",
                    "completion_tokens",
                    "input_tokens",
                    "output_tokens",
                    "usageMetadata",
                    "promptTokenCount",
                ]
            )
            | st.text(max_size=8),
            children,
            max_size=5,
        )
    ),
    max_leaves=20,
)
bodies = st.one_of(
    st.none(),
    st.binary(max_size=200),
    st.text(max_size=200),
    json_values.map(lambda v: json.dumps(v, allow_nan=True)),
)


def _ok_seconds(value: float | None) -> bool:
    return value is None or (math.isfinite(value) and value >= 0)


@FUZZ
@given(st.one_of(st.text(max_size=60), st.none(), st.integers(), st.floats()))
def test_duration_parsers_are_total(text: object) -> None:
    for parse in (
        parse_go_duration,
        parse_proto_duration,
        parse_retry_after_ms,
        parse_integer_seconds,
        parse_decimal,
    ):
        assert _ok_seconds(parse(text))
    assert _ok_seconds(parse_retry_after_s(text, reference=datetime(2025, 1, 1, tzinfo=UTC)))
    parse_rfc3339(text)
    parse_http_date(text)


@FUZZ
@given(header_maps, bodies, st.floats(min_value=0, max_value=4e9))
def test_every_profile_parses_any_headers(
    headers: dict[str, str], body: object, received_at: float
) -> None:
    for name in profile_names():
        observation = get_profile(name).parse_observation(headers, body, received_at=received_at)  # type: ignore[arg-type]
        assert isinstance(observation, Observation)
        assert _ok_seconds(observation.retry_after_s)
        for state in observation.dimensions.values():
            assert _ok_seconds(state.reset_s)
            assert state.limit is None or state.limit >= 0
            assert state.remaining is None or state.remaining >= 0


@FUZZ
@given(bodies)
def test_error_body_parser_is_total(body: bytes | str | None) -> None:
    error = parse_error_body(body)
    assert _ok_seconds(error.try_again_in_s)
    assert _ok_seconds(error.retry_delay_s)
    detail = error.limit_detail
    if detail is not None:
        assert _ok_seconds(detail.wait_s)
    assert len(error.short_message) <= 400


@FUZZ
@given(st.integers(min_value=100, max_value=599), header_maps, bodies)
def test_classifier_is_total(
    status: int, headers: dict[str, str], body: bytes | str | None
) -> None:
    error = classify_response(status, headers, body)
    if status >= 400:
        assert isinstance(error, ProviderError) and error.status == status
        wait_s = getattr(error, "wait_s", None)
        assert _ok_seconds(wait_s)
    else:
        assert error is None


@FUZZ
@given(json_values)
def test_usage_parsers_are_total(body: object) -> None:
    for name in profile_names():
        usage = get_profile(name).parse_usage(body)
        if usage is not None:
            assert usage.input_tokens >= 0 and usage.output_tokens >= 0

"""Durations as providers write them: Go, protobuf, retry-after, RFC 3339."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

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

REFERENCE = datetime(2025, 2, 24, 22, 25, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("12ms", 0.012),
        ("9ms", 0.009),
        ("464ms", 0.464),
        ("1s", 1.0),
        ("0s", 0.0),
        ("0", 0.0),
        ("6m0s", 360.0),
        ("1m30.5s", 90.5),
        ("4m12.172s", 252.172),
        ("23h18m29.144s", 23 * 3600 + 18 * 60 + 29.144),
        ("1h0m0s", 3600.0),
        ("2m59.56s", 179.56),
        ("18.642s", 18.642),
        ("1.5µs", 1.5e-6),  # micro sign
        ("1.5μs", 1.5e-6),  # greek mu
        ("250us", 250e-6),
        ("90ns", 90e-9),
        ("1h1ms", 3600.001),
        (" 20s ", 20.0),
    ],
)
def test_go_duration(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds, abs=1e-12)


@pytest.mark.parametrize(
    "text",
    [None, "", "-1", "-1s", "soon", "12", "1.2.3s", "s", "1d", "ms", "12 ms", "nan", "1e3s", 12],
)
def test_go_duration_garbage_is_unknown(text: object) -> None:
    assert parse_go_duration(text) is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("57.238747106s", 57.238747106), ("37s", 37.0), ("0s", 0.0), ("0.5s", 0.5)],
)
def test_proto_duration(text: str, seconds: float) -> None:
    assert parse_proto_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", [None, "37", "-1s", "1m", "1.1234567890s", "", {}])
def test_proto_duration_garbage(text: object) -> None:
    assert parse_proto_duration(text) is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("20", 20.0),
        ("0", 0.0),
        ("1.5", 1.5),
        # An HTTP date is read against the response's date, not the local clock.
        ("Mon, 24 Feb 2025 22:25:47 GMT", 47.0),
        # A date already past means "now".
        ("Mon, 24 Feb 2025 22:20:00 GMT", 0.0),
    ],
)
def test_retry_after(text: str, seconds: float) -> None:
    assert parse_retry_after_s(text, reference=REFERENCE) == pytest.approx(seconds)


def test_retry_after_http_date_without_reference_is_unknown() -> None:
    assert parse_retry_after_s("Mon, 24 Feb 2025 22:25:47 GMT", reference=None) is None


@pytest.mark.parametrize("text", [None, "", "-1", "soon", "inf", "nan", "1e999", "86400000000000"])
def test_retry_after_garbage(text: object) -> None:
    assert parse_retry_after_s(text, reference=REFERENCE) is None


def test_retry_after_ms() -> None:
    assert parse_retry_after_ms("7000") == 7.0
    assert parse_retry_after_ms("1234.5") == pytest.approx(1.2345)
    assert parse_retry_after_ms("-1") is None
    assert parse_retry_after_ms(None) is None


def test_rfc3339() -> None:
    assert parse_rfc3339("2025-02-24T22:25:47Z") == datetime(2025, 2, 24, 22, 25, 47, tzinfo=UTC)
    moment = parse_rfc3339("2025-02-24T23:25:47.5+01:00")
    assert moment is not None
    assert moment.astimezone(UTC) == datetime(2025, 2, 24, 22, 25, 47, 500000, tzinfo=UTC)
    for garbage in (None, "", "2025-02-24T22:25:47", "tomorrow", "2025-13-45T99:00:00Z"):
        assert parse_rfc3339(garbage) is None


def test_http_date() -> None:
    assert parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT") == datetime(
        2015, 10, 21, 7, 28, tzinfo=UTC
    )
    assert parse_http_date("not a date") is None


def test_decimal_and_integer_seconds() -> None:
    assert parse_decimal("160000") == 160000.0
    assert parse_decimal("-1") is None
    assert parse_decimal("1_000") is None
    assert parse_decimal("inf") is None
    assert parse_integer_seconds("7") == 7.0
    assert parse_integer_seconds("1m0s") == 60.0  # a gateway that sends Go durations
    assert parse_integer_seconds("-1") is None

"""Emulator value formats: Go durations, protobuf durations, RFC 3339, rounding."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from testing.emulator.formats import (
    go_duration,
    protobuf_duration,
    retry_after_ms,
    retry_after_s,
    rfc3339_floor,
    round_to_thousand,
)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0s"),
        (0.0004, "0s"),
        (0.009, "9ms"),
        (0.012, "12ms"),
        (0.464, "464ms"),
        (1.0, "1s"),
        (18.642, "18.642s"),
        (20.0, "20s"),
        (360.0, "6m0s"),
        (90.5, "1m30.5s"),
        (252.172, "4m12.172s"),
        (3600.0, "1h0m0s"),
        (23 * 3600 + 18 * 60 + 29.144, "23h18m29.144s"),
        (-3.0, "0s"),
    ],
)
def test_go_duration_table(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


_GO = re.compile(r"^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+)ms)?$")


def _parse_go(text: str) -> float:
    match = _GO.match(text)
    assert match, text
    hours, minutes, secs, millis = match.groups()
    return (
        int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(secs or 0) + int(millis or 0) / 1e3
    )


@given(st.integers(min_value=0, max_value=10**9))
def test_go_duration_round_trips_milliseconds(total_ms: int) -> None:
    text = go_duration(total_ms / 1000)
    assert abs(_parse_go(text) - total_ms / 1000) < 1e-6
    if total_ms >= 1000:
        assert text.endswith("s") and not text.endswith("ms")
        assert not re.search(r"\.\d*0s$", text), "trailing zeros are trimmed"


@pytest.mark.parametrize(
    ("seconds", "text"), [(37.0, "37s"), (18.642, "18.642s"), (0.5, "0.5s"), (0.0, "0s")]
)
def test_protobuf_duration(seconds: float, text: str) -> None:
    assert protobuf_duration(seconds) == text


def test_rfc3339_floors_to_whole_seconds() -> None:
    assert rfc3339_floor(1740435947.999) == "2025-02-24T22:25:47Z"


@pytest.mark.parametrize(
    ("value", "rounded"),
    [(78500, 79000), (77501, 78000), (77499, 77000), (499, 0), (-200, 0), (80000, 80000)],
)
def test_round_to_thousand(value: float, rounded: int) -> None:
    assert round_to_thousand(value) == rounded


@pytest.mark.parametrize(
    ("wait_s", "header"), [(0.0, 1), (0.2, 1), (1.0, 1), (1.001, 2), (18.642, 19), (86400, 86400)]
)
def test_retry_after_is_at_least_one_whole_second(wait_s: float, header: int) -> None:
    assert retry_after_s(wait_s) == header


def test_retry_after_ms_rounds_up() -> None:
    assert retry_after_ms(29.5) == 29500
    assert retry_after_ms(0.0001) == 1

"""Time values as providers write them, read into seconds or aware datetimes.

Every parser here is total: a missing, negative (``-1``), non-finite or malformed value
gives ``None`` ("unknown"), never an exception. Callers treat ``None`` as "the provider
did not say" and fall back to their own model.

Formats:

* Go ``time.Duration`` (OpenAI and Groq resets, OpenAI "try again in"): ``12ms``,
  ``6m0s``, ``1m30.5s``, ``23h18m29.144s``, ``0s``, ``1.5µs``, ``250us``, ``90ns``.
* protobuf ``Duration`` JSON (Gemini ``RetryInfo.retryDelay``): ``"57.238747106s"``.
* ``retry-after``: seconds (int or float) or an HTTP date, which is read against a
  *reference* time (the response's ``date`` header), never against the local clock.
* RFC 3339 timestamps (Anthropic resets): ``2025-02-24T22:25:47Z``.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

#: Each Go duration unit as (seconds multiplier, divisor). Sub-second units divide, so
#: ``9ms`` is exactly ``0.009``. Go accepts both the micro sign and the Greek mu.
GO_UNITS: dict[str, tuple[float, float]] = {
    "h": (3600.0, 1.0),
    "m": (60.0, 1.0),
    "s": (1.0, 1.0),
    "ms": (1.0, 1e3),
    "us": (1.0, 1e6),
    "µs": (1.0, 1e6),  # U+00B5 MICRO SIGN
    "μs": (1.0, 1e6),  # U+03BC GREEK SMALL LETTER MU
    "ns": (1.0, 1e9),
}

_GO_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_GO_UNIT = r"(?:ns|us|µs|μs|ms|s|m|h)"
#: A whole Go duration; longer unit names are listed first so ``ms`` wins over ``m``.
GO_DURATION_PATTERN = rf"\+?(?:{_GO_NUMBER}{_GO_UNIT})+"
_GO_DURATION = re.compile(rf"^(?:{GO_DURATION_PATTERN}|\+?0)$")
_GO_PART = re.compile(rf"({_GO_NUMBER})({_GO_UNIT})")
_PROTO_DURATION = re.compile(r"^(\d+(?:\.\d{1,9})?)s$")
_DECIMAL = re.compile(r"^\+?(?:\d+(?:\.\d*)?|\.\d+)$")

#: Longest duration we accept (about 3 years); anything larger is treated as garbage.
MAX_DURATION_S = 1e8


def _finite_non_negative(value: float) -> float | None:
    if math.isfinite(value) and 0.0 <= value <= MAX_DURATION_S:
        return value
    return None


def parse_decimal(text: object) -> float | None:
    """A plain non-negative decimal such as ``"4999"`` or ``"0.5"``; ``-1`` gives ``None``.

    >>> parse_decimal("160000"), parse_decimal("-1"), parse_decimal("1e3")
    (160000.0, None, None)
    """
    if not isinstance(text, str):
        return None
    text = text.strip()
    if not _DECIMAL.match(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def parse_go_duration(text: object) -> float | None:
    """Seconds in a Go ``time.Duration`` string.

    >>> parse_go_duration("6m0s"), parse_go_duration("12ms"), parse_go_duration("1m30.5s")
    (360.0, 0.012, 90.5)
    >>> parse_go_duration("-1s") is None and parse_go_duration("soon") is None
    True
    """
    if not isinstance(text, str):
        return None
    text = text.strip()
    if not _GO_DURATION.match(text):
        return None
    total_s = 0.0
    for number, unit in _GO_PART.findall(text):
        multiplier, divisor = GO_UNITS[unit]
        total_s += float(number) * multiplier / divisor
    return _finite_non_negative(total_s)


def parse_proto_duration(text: object) -> float | None:
    """Seconds in a protobuf ``Duration`` JSON string such as ``"57.238747106s"``."""
    if not isinstance(text, str):
        return None
    match = _PROTO_DURATION.match(text.strip())
    if match is None:
        return None
    return _finite_non_negative(float(match[1]))


def parse_rfc3339(text: object) -> datetime | None:
    """An aware datetime from an RFC 3339 timestamp; a naive or malformed one is ``None``."""
    if not isinstance(text, str) or not 10 <= len(text.strip()) <= 64:
        return None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return moment


def parse_http_date(text: object) -> datetime | None:
    """An aware datetime from an HTTP date (``Wed, 21 Oct 2015 07:28:00 GMT``)."""
    if not isinstance(text, str) or not text.strip() or len(text) > 64:
        return None
    try:
        moment = parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:
        # RFC 9110 dates are always GMT; email.utils returns naive for "-0000".
        moment = moment.replace(tzinfo=UTC)
    return moment


def seconds_between(start: datetime, end: datetime) -> float | None:
    """``end - start`` in seconds, or ``None`` if either is unusable."""
    try:
        delta_s = (end - start).total_seconds()
    except (TypeError, OverflowError):
        return None
    return delta_s if math.isfinite(delta_s) else None


def parse_retry_after_s(text: object, *, reference: datetime | None) -> float | None:
    """The wait in a ``retry-after`` header: seconds, or an HTTP date minus ``reference``.

    ``reference`` should be the response's ``date`` header, so that a skewed local clock
    does not change the answer. Without a reference an HTTP date gives ``None``. A date in
    the past gives ``0.0``.

    >>> parse_retry_after_s("20", reference=None)
    20.0
    """
    seconds = parse_decimal(text)
    if seconds is not None:
        return _finite_non_negative(seconds)
    if reference is None:
        return None
    moment = parse_http_date(text)
    if moment is None:
        return None
    delta_s = seconds_between(reference, moment)
    if delta_s is None:
        return None
    return _finite_non_negative(max(0.0, delta_s))


def parse_retry_after_ms(text: object) -> float | None:
    """The wait in a ``retry-after-ms`` header (float milliseconds), in seconds."""
    millis = parse_decimal(text)
    if millis is None:
        return None
    return _finite_non_negative(millis / 1000.0)


def parse_integer_seconds(text: object) -> float | None:
    """Azure's reset headers: whole (sometimes fractional) seconds, ``-1`` unknown.

    Some Azure-fronted gateways send Go durations instead, so those are accepted too.
    """
    seconds = parse_decimal(text)
    if seconds is not None:
        return _finite_non_negative(seconds)
    return parse_go_duration(text)

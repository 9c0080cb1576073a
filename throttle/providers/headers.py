"""Rate-limit headers of each provider, read into an :class:`~.observation.Observation`.

All parsers are pure (the receipt time is passed in) and total: a missing, ``-1`` or
malformed header leaves that field ``None``; no exception escapes. Header names are
matched case-insensitively.

=================  ==========================================  ========================
provider           headers                                     reset format
=================  ==========================================  ========================
OpenAI             ``x-ratelimit-{limit,remaining,reset}-      Go duration, time to full
                   {requests,tokens}``
Groq               same names; ``*-requests`` is **per day**   Go duration
Azure OpenAI       same names                                  integer seconds
Anthropic          ``anthropic-ratelimit-{requests,input-      RFC 3339 instant, read
                   tokens,output-tokens,tokens}-*``            against ``date``
Gemini             none; ``RetryInfo.retryDelay`` in the body  protobuf Duration
=================  ==========================================  ========================

Every profile also reads ``retry-after-ms`` (float ms) before ``retry-after`` (seconds or
an HTTP date, read against the response ``date`` header).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime

from throttle.providers.durations import (
    parse_decimal,
    parse_go_duration,
    parse_http_date,
    parse_integer_seconds,
    parse_retry_after_ms,
    parse_retry_after_s,
    parse_rfc3339,
    seconds_between,
)
from throttle.providers.observation import (
    INPUT_TOKENS,
    OUTPUT_TOKENS,
    REQUESTS,
    REQUESTS_DAY,
    TOKENS,
    DimensionState,
    Observation,
)

#: What header parsers accept: any mapping, or (name, value) pairs as on the wire.
HeadersLike = Mapping[str, str] | Iterable[tuple[str, str]]

#: Anthropic rounds token ``remaining`` values to the nearest thousand.
ANTHROPIC_TOKEN_GRANULARITY = 1000.0

#: Limit headers are capped at this size; a longer value is garbage.
_MAX_VALUE_LEN = 128


class HeaderView:
    """Case-insensitive, read-only access to response headers.

    Non-string names or values are ignored, and of repeated names the first wins.
    """

    __slots__ = ("_values",)

    def __init__(self, headers: HeadersLike | HeaderView | None) -> None:
        if isinstance(headers, HeaderView):
            self._values: dict[str, str] = dict(headers._values)
            return
        self._values = {}
        if headers is None:
            return
        pairs: Iterable[object] = headers.items() if isinstance(headers, Mapping) else headers
        try:
            for pair in pairs:
                if not isinstance(pair, tuple) or len(pair) != 2:
                    continue
                name, value = pair
                if isinstance(name, str) and isinstance(value, str):
                    self._values.setdefault(name.strip().lower(), value)
        except TypeError:
            return

    def get(self, name: str) -> str | None:
        value = self._values.get(name.lower())
        if value is None or len(value) > _MAX_VALUE_LEN:
            return None
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._values

    def __repr__(self) -> str:
        # Names only: values may include cookies or tokens.
        return f"HeaderView({sorted(self._values)})"


def response_date(headers: HeaderView) -> datetime | None:
    """The response's ``date`` header, the provider's clock at the time of the answer."""
    return parse_http_date(headers.get("date"))


def header_retry_after_s(headers: HeaderView) -> float | None:
    """``retry-after-ms`` if present, else ``retry-after`` (seconds or HTTP date)."""
    wait_s = parse_retry_after_ms(headers.get("retry-after-ms"))
    if wait_s is not None:
        return wait_s
    return parse_retry_after_s(headers.get("retry-after"), reference=response_date(headers))


def _dimension(
    limit: float | None,
    remaining: float | None,
    reset_s: float | None,
    granularity: float = 1.0,
) -> DimensionState | None:
    if limit is None and remaining is None and reset_s is None:
        return None
    return DimensionState(limit, remaining, reset_s, granularity)


def _bucket_headers(
    headers: HeaderView,
    *,
    prefix: str,
    suffixes: Mapping[str, str],
    parse_reset: Callable[[str | None], float | None],
) -> dict[str, DimensionState]:
    """``{prefix}{limit,remaining,reset}-{suffix}`` for each suffix -> dimension."""
    dimensions: dict[str, DimensionState] = {}
    for suffix, dimension in suffixes.items():
        state = _dimension(
            parse_decimal(headers.get(f"{prefix}limit-{suffix}")),
            parse_decimal(headers.get(f"{prefix}remaining-{suffix}")),
            parse_reset(headers.get(f"{prefix}reset-{suffix}")),
        )
        if state is not None:
            dimensions[dimension] = state
    return dimensions


#: OpenAI header suffix -> dimension.
OPENAI_SUFFIXES: Mapping[str, str] = {
    "requests": REQUESTS,
    "tokens": TOKENS,
    "tokens_usage_based": "tokens_usage_based",
}

#: Groq uses OpenAI's names, but its request headers describe the per-day bucket.
GROQ_SUFFIXES: Mapping[str, str] = {"requests": REQUESTS_DAY, "tokens": TOKENS}


def parse_openai_headers(
    headers: HeadersLike | HeaderView | None,
    *,
    received_at: float,
    suffixes: Mapping[str, str] = OPENAI_SUFFIXES,
) -> Observation:
    """OpenAI (and OpenAI-compatible) headers; resets are Go durations until full.

    The token headers describe the *binding* bucket, which may be the per-day one
    (limit 1,500,000 with reset ``23h18m29.144s``); compare ``limit`` to the configured
    capacities, or use :attr:`DimensionState.implied_window_s`, to tell which.
    """
    view = HeaderView(headers)
    dimensions = _bucket_headers(
        view, prefix="x-ratelimit-", suffixes=suffixes, parse_reset=parse_go_duration
    )
    return Observation(received_at, dimensions, header_retry_after_s(view))


def parse_groq_headers(
    headers: HeadersLike | HeaderView | None, *, received_at: float
) -> Observation:
    """Groq: OpenAI names, but ``x-ratelimit-*-requests`` is requests per **day**."""
    return parse_openai_headers(headers, received_at=received_at, suffixes=GROQ_SUFFIXES)


def parse_azure_headers(
    headers: HeadersLike | HeaderView | None, *, received_at: float
) -> Observation:
    """Azure OpenAI: resets in integer seconds; 429s add ``retry-after-ms``.

    Warning: Azure's ``remaining-requests`` counts a 10-second window of RPM/6, while
    ``limit-requests`` is per minute; do not derive a per-minute level from it.
    """
    view = HeaderView(headers)
    dimensions = _bucket_headers(
        view,
        prefix="x-ratelimit-",
        suffixes={"requests": REQUESTS, "tokens": TOKENS},
        parse_reset=parse_integer_seconds,
    )
    return Observation(received_at, dimensions, header_retry_after_s(view))


#: Anthropic header infix -> (dimension, rounding granularity of ``remaining``).
ANTHROPIC_BUCKETS: Mapping[str, tuple[str, float]] = {
    "requests": (REQUESTS, 1.0),
    "input-tokens": (INPUT_TOKENS, ANTHROPIC_TOKEN_GRANULARITY),
    "output-tokens": (OUTPUT_TOKENS, ANTHROPIC_TOKEN_GRANULARITY),
    "tokens": (TOKENS, ANTHROPIC_TOKEN_GRANULARITY),
}


def parse_anthropic_headers(
    headers: HeadersLike | HeaderView | None, *, received_at: float
) -> Observation:
    """Anthropic: RFC 3339 reset instants, read against the response ``date`` header.

    ``reset_s = reset - date``, never ``reset - local clock``, so a skewed worker clock
    does not matter. Without a ``date`` header the receipt time stands in. A full bucket
    may report a reset at or before ``date``; that reads as ``0.0``. Token ``remaining``
    values are rounded to 1,000 by the provider: ``remaining_granularity`` says so.
    Priority Tier buckets (``anthropic-priority-*``) are read as ``priority_*``.
    """
    view = HeaderView(headers)
    reference = response_date(view) or datetime.fromtimestamp(received_at, UTC)

    def reset_s(text: str | None) -> float | None:
        moment = parse_rfc3339(text)
        if moment is None:
            return None
        delta_s = seconds_between(reference, moment)
        return None if delta_s is None else max(0.0, delta_s)

    dimensions: dict[str, DimensionState] = {}
    families = (("anthropic-ratelimit-", ""), ("anthropic-priority-", "priority_"))
    for prefix, name_prefix in families:
        for infix, (dimension, granularity) in ANTHROPIC_BUCKETS.items():
            state = _dimension(
                parse_decimal(view.get(f"{prefix}{infix}-limit")),
                parse_decimal(view.get(f"{prefix}{infix}-remaining")),
                reset_s(view.get(f"{prefix}{infix}-reset")),
                granularity,
            )
            if state is not None:
                dimensions[name_prefix + dimension] = state
    return Observation(received_at, dimensions, header_retry_after_s(view))


def parse_no_headers(
    headers: HeadersLike | HeaderView | None, *, received_at: float
) -> Observation:
    """Gemini sends no limit headers; only a ``retry-after``, if a proxy added one."""
    return Observation(received_at, {}, header_retry_after_s(HeaderView(headers)))

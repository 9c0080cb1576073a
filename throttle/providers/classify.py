"""Turn a failed response (status, headers, body) into one typed :mod:`throttle.errors` error.

Decision order (first match wins):

1. ``2xx``/``3xx``: not an error (``None``).
2. **Terminal quota or billing**, whatever the status: a code in :data:`TERMINAL_CODES`
   (``insufficient_quota``, spend limits, Anthropic ``enforced_spend_limit_reached``)
   or HTTP 402 -> :class:`QuotaExhaustedError`.
3. **Too large**: "Request too large", or a message quoting ``Requested > Limit``, or
   HTTP 413 -> :class:`RequestTooLargeError`. Waiting never helps.
4. **Rate limit** (429, Gemini ``RESOURCE_EXHAUSTED``): the wait is the first known of
   ``retry-after-ms`` > ``retry-after`` > "try again in 18.642s" > Gemini
   ``retryDelay`` > Azure "retry after 7 seconds" > the message's Limit/Used/Requested
   arithmetic. Gemini ``…PerDay…`` quotas wait until midnight Pacific. A wait longer
   than :attr:`ClassifyPolicy.terminal_wait_s` (Azure/Groq "retry after 86400
   seconds") is surfaced as :class:`QuotaExhaustedError` instead of slept on. An
   explicit ``x-should-retry: false`` on a 429 is terminal.
5. **Overload**: Anthropic 529, 503 ``server_is_overloaded`` and every other 5xx ->
   :class:`OverloadedError` (retryable, with ``retry-after`` when sent), unless the
   provider says ``x-should-retry: false``.
6. 408 and 409, or ``x-should-retry: true`` on another 4xx -> :class:`TransportError`
   (retryable, as the official SDKs treat them).
7. Any other 4xx (400, 401, 403, 404, 422...) -> :class:`ClientRequestError`.

Exception messages hold the provider's message cut to 400 characters with anything
key-shaped masked; never a key, never the prompt.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

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
from throttle.providers.credentials import redact
from throttle.providers.errorbody import ErrorBody, parse_error_body
from throttle.providers.headers import HeadersLike, HeaderView, header_retry_after_s, response_date
from throttle.providers.observation import Observation

#: Codes that no amount of waiting fixes (checked against code, type and detail code).
TERMINAL_CODES: frozenset[str] = frozenset(
    {
        "insufficient_quota",
        "credit_balance_exhausted",
        "organization_spend_limit_exceeded",
        "project_spend_limit_exceeded",
        "organization_usage_limit_exceeded",
        "enforced_spend_limit_reached",
        "billing_hard_limit_reached",
        "billing_not_active",
    }
)

#: Gemini's per-day quotas reset at midnight in this zone.
GEMINI_DAY_ZONE = ZoneInfo("America/Los_Angeles")


@dataclass(frozen=True)
class ClassifyPolicy:
    """Knobs of :func:`classify_response`."""

    #: A rate-limit wait longer than this is a quota, not a rate limit: surfaced as
    #: :class:`QuotaExhaustedError` rather than slept on (openai-python does the same
    #: at 120 s; a throttle that parks tasks can afford longer).
    terminal_wait_s: float = 3600.0
    #: Obey ``x-should-retry`` when the provider sends it.
    honour_should_retry: bool = True


DEFAULT_POLICY = ClassifyPolicy()


def _should_retry(headers: HeaderView) -> bool | None:
    value = (headers.get("x-should-retry") or "").strip().lower()
    return {"true": True, "false": False}.get(value)


def seconds_until_midnight(moment: datetime, zone: ZoneInfo = GEMINI_DAY_ZONE) -> float:
    """Seconds from ``moment`` (aware) until the next midnight in ``zone``."""
    local = moment.astimezone(zone)
    midnight = (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    # Subtract in UTC: same-zone subtraction would ignore a DST change that night.
    return max(0.0, (midnight.astimezone(UTC) - moment.astimezone(UTC)).total_seconds())


def rate_limit_wait_s(
    headers: HeaderView,
    error: ErrorBody,
    *,
    reference: datetime | None = None,
) -> float | None:
    """The wait a 429 asks for, from the most to the least authoritative signal."""
    for candidate in (
        header_retry_after_s(headers),
        error.try_again_in_s,
        error.retry_delay_s,
        error.retry_after_in_message_s,
    ):
        if candidate is not None:
            return candidate
    if any("perday" in quota_id.lower() for quota_id in error.quota_ids) and reference:
        return seconds_until_midnight(reference)
    detail = error.limit_detail
    return detail.wait_s if detail is not None else None


def _describe(provider: str, status: int, error: ErrorBody) -> str:
    text = error.short_message or "(no message)"
    return redact(f"{provider} answered {status}: {text}")


def classify_response(
    status: int,
    headers: HeadersLike | HeaderView | None,
    body: bytes | str | Mapping[str, object] | None,
    *,
    provider: str = "provider",
    policy: ClassifyPolicy = DEFAULT_POLICY,
    observation: Observation | None = None,
    reference: datetime | None = None,
) -> ProviderError | None:
    """The typed error for a response, or ``None`` if ``status`` is a success.

    ``reference`` is the time used for day-boundary waits when the response has no
    ``date`` header (pass the receipt time). ``observation``, when given, lets a 429
    without a named bucket point at the dimension the headers report as exhausted.
    """
    if status < 400:
        return None
    view = HeaderView(headers)
    error = parse_error_body(body)
    codes = error.codes
    message = _describe(provider, status, error)
    should_retry = _should_retry(view) if policy.honour_should_retry else None
    detail = error.limit_detail

    if codes & TERMINAL_CODES or status == 402:
        return QuotaExhaustedError(message, status=status)
    too_large = "request too large" in error.message.lower()
    if too_large or status == 413 or (detail is not None and detail.exceeds_capacity):
        return RequestTooLargeError(message, status=status)

    if status == 429 or "resource_exhausted" in codes:
        if should_retry is False:
            return QuotaExhaustedError(f"{message} (x-should-retry: false)", status=status)
        wait_s = rate_limit_wait_s(view, error, reference=response_date(view) or reference)
        if wait_s is not None and wait_s > policy.terminal_wait_s:
            return QuotaExhaustedError(
                f"{message} (asks to wait {wait_s:.0f}s, over the"
                f" {policy.terminal_wait_s:.0f}s threshold)",
                status=status,
            )
        dimension = detail.dimension if detail is not None else None
        if dimension is None and observation is not None and observation.exhausted:
            dimension = observation.exhausted[0]
        return RateLimitedError(message, wait_s=wait_s, dimension=dimension, status=status)

    if status >= 500:
        if should_retry is False:
            return TerminalProviderError(f"{message} (x-should-retry: false)", status=status)
        return OverloadedError(message, wait_s=header_retry_after_s(view), status=status)
    if status in (408, 409) or should_retry is True:
        return TransportError(message, status=status)
    return ClientRequestError(message, status=status)

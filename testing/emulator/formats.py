"""Value formats the providers use in headers and bodies.

Every function is pure and takes seconds (``*_s``) so it can be tested without a clock.
"""

from __future__ import annotations

import math
import time
from email.utils import formatdate


def go_duration(seconds: float) -> str:
    """Format ``seconds`` like Go's ``time.Duration.String()``, rounded to milliseconds.

    OpenAI's ``x-ratelimit-reset-*`` headers and "Please try again in ..." use it.

    >>> [go_duration(s) for s in (0, 0.012, 1, 360, 90.5, 3600)]
    ['0s', '12ms', '1s', '6m0s', '1m30.5s', '1h0m0s']
    """
    total_ms = round(seconds * 1000.0) if math.isfinite(seconds) else 0
    if total_ms <= 0:
        return "0s"
    if total_ms < 1000:
        return f"{total_ms}ms"
    hours, rest_ms = divmod(total_ms, 3_600_000)
    minutes, rest_ms = divmod(rest_ms, 60_000)
    secs, frac_ms = divmod(rest_ms, 1000)
    sec_text = f"{secs}.{frac_ms:03d}".rstrip("0") if frac_ms else str(secs)
    if hours:
        return f"{hours}h{minutes}m{sec_text}s"
    if minutes:
        return f"{minutes}m{sec_text}s"
    return f"{sec_text}s"


def protobuf_duration(seconds: float) -> str:
    """Format ``seconds`` as a protobuf ``Duration`` JSON string (``"37s"``, ``"18.642s"``).

    Gemini's ``RetryInfo.retryDelay`` uses it. Rounded to milliseconds.
    """
    total_ms = max(0, round(seconds * 1000.0)) if math.isfinite(seconds) else 0
    secs, frac_ms = divmod(total_ms, 1000)
    if frac_ms:
        return f"{secs}.{frac_ms:03d}".rstrip("0") + "s"
    return f"{secs}s"


def rfc3339_floor(epoch_s: float) -> str:
    """UTC ``YYYY-MM-DDTHH:MM:SSZ`` of ``epoch_s`` floored to whole seconds (Anthropic resets)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(math.floor(epoch_s)))


def http_date(epoch_s: float) -> str:
    """RFC 7231 HTTP-date of ``epoch_s`` (the ``date`` header)."""
    return formatdate(math.floor(epoch_s), usegmt=True)


def round_to_thousand(value: float) -> int:
    """Round half up to the nearest 1,000, never below 0 (Anthropic token ``remaining``)."""
    return max(0, math.floor(value / 1000.0 + 0.5) * 1000)


def retry_after_s(wait_s: float) -> int:
    """The integer ``retry-after`` for a wait: ``max(1, ceil(wait_s))``."""
    return max(1, math.ceil(wait_s - 1e-9))


def retry_after_ms(wait_s: float) -> int:
    """Azure's ``retry-after-ms`` for a wait: ``max(1, ceil(wait_s * 1000))``."""
    return max(1, math.ceil(wait_s * 1000.0 - 1e-6))


def window_label(window_s: float) -> str:
    """``"day"`` for day-long windows, else ``"min"`` (providers only name these two)."""
    return "day" if window_s >= 86_400.0 else "min"

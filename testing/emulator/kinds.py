"""The emulator config's named choices: profiles, accounting modes, meters, clocks, faults."""

from __future__ import annotations

from enum import StrEnum


class Profile(StrEnum):
    """Which provider's wire format and accounting a route speaks."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    AZURE = "azure"
    GEMINI = "gemini"


class OutputMode(StrEnum):
    """Anthropic output-token accounting."""

    #: Admit only if the output bucket is above 0; debit actual output when generated.
    REALTIME = "realtime"
    #: Debit max_tokens at admission, refund the unused part at the end.
    RESERVE = "reserve"


class MeterKind(StrEnum):
    BUCKET = "bucket"
    SLIDING = "sliding"


class ClockKind(StrEnum):
    REAL = "real"
    MANUAL = "manual"


class FaultKind(StrEnum):
    """Injected misbehaviour. "Replacing" kinds answer instead of the normal path."""

    RATE_LIMIT = "rate_limit"  # 429 storm with retry_after_s (default 1)
    HUGE_RETRY_AFTER = "huge_retry_after"  # 429 with retry-after 86400
    INSUFFICIENT_QUOTA = "insufficient_quota"
    CREDIT_BALANCE_EXHAUSTED = "credit_balance_exhausted"
    SLOW_DOWN = "slow_down"
    SPEND_CAP = "spend_cap"  # 429 without retry-after
    SERVER_ERROR = "server_error"  # 5xx, status default 500
    OVERLOADED = "overloaded"  # OpenAI 503 server_is_overloaded, Anthropic 529
    DROP_CONNECTION = "drop_connection"  # close the socket without answering
    # Modifiers: change the normal answer.
    MISSING_HEADERS = "missing_headers"
    NEGATIVE_HEADERS = "negative_headers"  # rate-limit headers set to -1
    SLOW = "slow"  # add delay_ms
    SHOULD_RETRY = "should_retry"  # add x-should-retry: true|false
    # Scheduled event.
    LIMIT_CHANGE = "limit_change"  # at start_s, set `limits` on `pool` without notice


MODIFIER_KINDS = frozenset(
    {FaultKind.MISSING_HEADERS, FaultKind.NEGATIVE_HEADERS, FaultKind.SLOW, FaultKind.SHOULD_RETRY}
)

"""The facts inside a provider's error body, whatever its shape.

Shapes understood (providers.md §2-5):

* OpenAI, Groq, OpenRouter: ``{"error": {"message", "type", "code", "param"}}``
* Anthropic: ``{"type": "error", "error": {"type", "message", "details": {"error_code"}}}``
* Azure: ``{"error": {"code": "429", "message": "... Please retry after 7 seconds ..."}}``
* Gemini: ``{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": [
  QuotaFailure{violations[quotaId]}, RetryInfo{retryDelay}]}}`` (sometimes in a list)

:func:`parse_error_body` is total: bytes that are not JSON, JSON that is not an object,
fields of the wrong type all give empty fields, never an exception.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from throttle.providers.durations import (
    GO_DURATION_PATTERN,
    parse_decimal,
    parse_go_duration,
    parse_proto_duration,
)
from throttle.providers.observation import (
    INPUT_TOKENS,
    OUTPUT_TOKENS,
    REQUESTS,
    REQUESTS_DAY,
    TOKENS,
    TOKENS_DAY,
)

#: Bodies larger than this are not parsed (an error body is a few hundred bytes).
MAX_BODY_BYTES = 256 * 1024

#: Provider messages are cut to this length before they go into exception text.
MAX_MESSAGE_CHARS = 400

#: Only this much of a message is searched for waits and limits (bounds regex time).
_SCAN_CHARS = 2000

_TRY_AGAIN = re.compile(rf"try again in\s+({GO_DURATION_PATTERN})", re.IGNORECASE)
_RETRY_AFTER_SECONDS = re.compile(
    r"retry after\s+(\d+(?:\.\d+)?)\s*(?:seconds?|secs?|s)\b", re.IGNORECASE
)
_OPENAI_LIMIT = re.compile(
    r"on (requests|tokens|images|input tokens|output tokens) per (min|minute|day)\b"
    r"(?:.*?Limit:? ([\d,]+))?(?:.*?Used:? ([\d,]+))?(?:.*?Requested:? ([\d,]+))?",
    re.IGNORECASE | re.DOTALL,
)
_ANTHROPIC_LIMIT = re.compile(
    r"rate limit for your organization of ([\d,]+) (requests|input tokens|output tokens)"
    r" per (minute|day)",
    re.IGNORECASE,
)

_DIMENSIONS: Mapping[tuple[str, str], str] = {
    ("requests", "min"): REQUESTS,
    ("requests", "day"): REQUESTS_DAY,
    ("tokens", "min"): TOKENS,
    ("tokens", "day"): TOKENS_DAY,
    ("input tokens", "min"): INPUT_TOKENS,
    ("output tokens", "min"): OUTPUT_TOKENS,
    ("images", "min"): "images",
}


@dataclass(frozen=True)
class LimitDetail:
    """The numbers a rate-limit message quotes: which bucket, and its arithmetic."""

    dimension: str | None
    #: ``60`` or ``86400``: the window the message names.
    window_s: float | None
    limit: float | None = None
    used: float | None = None
    requested: float | None = None

    @property
    def wait_s(self) -> float | None:
        """Time until the request fits: ``(used + requested - limit) / (limit / window)``.

        OpenAI's "try again in" is exactly this (30000/14567/24754 -> 18.642 s).
        """
        if None in (self.limit, self.used, self.requested, self.window_s):
            return None
        assert self.limit is not None and self.used is not None
        assert self.requested is not None and self.window_s is not None
        if self.limit <= 0:
            return None
        return max(0.0, self.used + self.requested - self.limit) / (self.limit / self.window_s)

    @property
    def exceeds_capacity(self) -> bool:
        """``Requested > Limit``: the request can never fit (terminal)."""
        return self.limit is not None and self.requested is not None and self.requested > self.limit


@dataclass(frozen=True)
class ErrorBody:
    """Everything the classifier needs from an error body. Absent fields are ``None``."""

    message: str = ""
    #: ``error.code`` as text (OpenAI ``"insufficient_quota"``, Azure ``"429"``).
    code: str | None = None
    #: ``error.type`` (OpenAI ``"tokens"``, Anthropic ``"rate_limit_error"``).
    type: str | None = None
    #: Gemini's ``error.status`` (``"RESOURCE_EXHAUSTED"``).
    status: str | None = None
    #: Anthropic ``error.details.error_code`` (``"enforced_spend_limit_reached"``).
    detail_code: str | None = None
    #: Gemini ``QuotaFailure.violations[].quotaId``.
    quota_ids: tuple[str, ...] = ()
    #: Gemini ``RetryInfo.retryDelay``, in seconds.
    retry_delay_s: float | None = None

    @property
    def codes(self) -> frozenset[str]:
        """Every machine-readable code present, lower-cased, for set lookups."""
        return frozenset(
            c.lower() for c in (self.code, self.type, self.status, self.detail_code) if c
        )

    @property
    def try_again_in_s(self) -> float | None:
        """OpenAI/Groq "Please try again in 18.642s" as seconds."""
        match = _TRY_AGAIN.search(self.message[:_SCAN_CHARS])
        return parse_go_duration(match[1]) if match else None

    @property
    def retry_after_in_message_s(self) -> float | None:
        """Azure "Please retry after 7 seconds" as seconds."""
        match = _RETRY_AFTER_SECONDS.search(self.message[:_SCAN_CHARS])
        return parse_decimal(match[1]) if match else None

    @property
    def limit_detail(self) -> LimitDetail | None:
        """The bucket and numbers the message quotes (OpenAI, Groq or Anthropic style)."""
        match = _OPENAI_LIMIT.search(self.message[:_SCAN_CHARS])
        if match:
            kind, window = match[1].lower(), "day" if match[2].lower() == "day" else "min"
            return LimitDetail(
                _DIMENSIONS.get((kind, window)),
                86400.0 if window == "day" else 60.0,
                _number(match[3]),
                _number(match[4]),
                _number(match[5]),
            )
        match = _ANTHROPIC_LIMIT.search(self.message[:_SCAN_CHARS])
        if match:
            kind, window = match[2].lower(), "day" if match[3].lower() == "day" else "min"
            return LimitDetail(
                _DIMENSIONS.get((kind, window)),
                86400.0 if window == "day" else 60.0,
                _number(match[1]),
            )
        return None

    @property
    def short_message(self) -> str:
        """The message cut to :data:`MAX_MESSAGE_CHARS` for exception text."""
        text = " ".join(self.message.split())
        if len(text) > MAX_MESSAGE_CHARS:
            return text[: MAX_MESSAGE_CHARS - 3] + "..."
        return text


def _number(text: str | None) -> float | None:
    return None if text is None else parse_decimal(text.replace(",", ""))


def _text(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def decode_json(body: bytes | str | None) -> object:
    """JSON from a body, or ``None`` if it is absent, too large or not JSON."""
    if body is None or len(body) > MAX_BODY_BYTES:
        return None
    try:
        return json.loads(body)
    except (ValueError, TypeError, RecursionError):
        return None


def parse_error_body(body: bytes | str | Mapping[str, object] | None) -> ErrorBody:
    """Read an error body in any of the known shapes; unknown shapes give an empty result."""
    document: object = body if isinstance(body, Mapping) else decode_json(body)
    if isinstance(document, list) and document:
        document = document[0]  # Gemini sometimes wraps the error in a list
    if not isinstance(document, Mapping):
        return ErrorBody()
    error = document.get("error")
    if isinstance(error, str):
        return ErrorBody(message=error)
    if not isinstance(error, Mapping):
        return ErrorBody(message=_text(document.get("message")) or "")

    details = error.get("details")
    detail_code: str | None = None
    quota_ids: list[str] = []
    retry_delay_s: float | None = None
    if isinstance(details, Mapping):
        detail_code = _text(details.get("error_code"))
    elif isinstance(details, list):
        for item in details:
            if not isinstance(item, Mapping):
                continue
            violations = item.get("violations")
            if isinstance(violations, list):
                quota_ids.extend(
                    quota_id
                    for v in violations
                    if isinstance(v, Mapping) and isinstance(quota_id := v.get("quotaId"), str)
                )
            delay = parse_proto_duration(item.get("retryDelay"))
            if delay is not None:
                retry_delay_s = delay

    return ErrorBody(
        message=_text(error.get("message")) or "",
        code=_text(error.get("code")),
        type=_text(error.get("type")),
        status=_text(error.get("status")),
        detail_code=detail_code,
        quota_ids=tuple(quota_ids),
        retry_delay_s=retry_delay_s,
    )

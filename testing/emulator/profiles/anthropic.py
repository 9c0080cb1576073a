"""Anthropic messages: ``anthropic-ratelimit-*`` headers, RFC 3339 resets (spec §3, §8)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from testing.emulator.calls import Call
from testing.emulator.formats import (
    retry_after_s,
    rfc3339_floor,
    round_to_thousand,
    window_label,
)
from testing.emulator.kinds import FaultKind, Profile
from testing.emulator.profiles.base import (
    COMPLETION_TEXT,
    Body,
    DimSnapshot,
    FaultInfo,
    Headers,
    ProfileRules,
    RejectInfo,
    binding,
    floor_text,
    int_text,
)
from testing.emulator.profiles.streams import anthropic_stream

_PREFIX = "anthropic-ratelimit-"
_DETAILS = (
    "For details, refer to: https://docs.anthropic.com/en/api/rate-limits. You can see the"
    " response headers for current usage. Please reduce the prompt length or the maximum"
    " tokens requested, or try again later."
)
_NOUNS = {"requests": "requests", "input_tokens": "input tokens", "output_tokens": "output tokens"}

#: (status, error type, message) of the fixed-text faults.
_FAULTS: dict[FaultKind, tuple[int, str, str]] = {
    FaultKind.OVERLOADED: (529, "overloaded_error", "Overloaded"),
    FaultKind.SERVER_ERROR: (500, "api_error", "Internal server error"),
    FaultKind.INSUFFICIENT_QUOTA: (
        400,
        "invalid_request_error",
        "Your credit balance is too low to access the Anthropic API. Please go to Plans &"
        " Billing to upgrade or purchase credits.",
    ),
    FaultKind.SLOW_DOWN: (
        429,
        "rate_limit_error",
        "This request would exceed your organization's rate limit: usage increased too"
        " quickly (acceleration limit). Please ramp up gradually.",
    ),
}
_FAULTS[FaultKind.CREDIT_BALANCE_EXHAUSTED] = _FAULTS[FaultKind.INSUFFICIENT_QUOTA]


def error_body(type_: str, message: str, request_id: str) -> Body:
    return {
        "type": "error",
        "error": {"type": type_, "message": message},
        "request_id": request_id,
    }


def first_of_next_month(wall_s: float) -> str:
    """``YYYY-MM-01`` of the month after ``wall_s`` (UTC): when a spend cap lifts."""
    now = time.gmtime(wall_s)
    year, month = (now.tm_year + 1, 1) if now.tm_mon == 12 else (now.tm_year, now.tm_mon + 1)
    return f"{year:04d}-{month:02d}-01"


class AnthropicRules(ProfileRules):
    profile = Profile.ANTHROPIC

    def rate_headers(self, snaps: Sequence[DimSnapshot], wall_s: float) -> Headers:
        headers: Headers = []
        found: dict[str, DimSnapshot] = {}
        for kind in ("requests", "input_tokens", "output_tokens"):
            snap = binding(snaps, kind)
            if snap is None:
                continue
            found[kind] = snap
            name = kind.replace("_", "-")
            remaining = (
                floor_text(snap.level) if kind == "requests" else str(round_to_thousand(snap.level))
            )
            headers += [
                (f"{_PREFIX}{name}-limit", int_text(snap.capacity)),
                (f"{_PREFIX}{name}-remaining", remaining),
                (f"{_PREFIX}{name}-reset", rfc3339_floor(wall_s + snap.time_to_full_s)),
            ]
        workspace = binding(snaps, "tokens")
        if workspace is not None:
            limit, level, reset_s = workspace.capacity, workspace.level, workspace.time_to_full_s
        elif "input_tokens" in found and "output_tokens" in found:
            inp, out = found["input_tokens"], found["output_tokens"]
            limit, level = inp.capacity + out.capacity, inp.level + out.level
            reset_s = inp.time_to_full_s
        else:
            return headers
        headers += [
            (f"{_PREFIX}tokens-limit", int_text(limit)),
            (f"{_PREFIX}tokens-remaining", str(round_to_thousand(level))),
            (f"{_PREFIX}tokens-reset", rfc3339_floor(wall_s + reset_s)),
        ]
        return headers

    def retry_headers(self, wait_s: float) -> Headers:
        return [("retry-after", str(retry_after_s(wait_s)))]

    def id_headers(self, request_id: str, processing_ms: int, org: str) -> Headers:
        return [("request-id", request_id), ("anthropic-organization-id", org)]

    def success(self, call: Call, request_id: str, wall_s: float) -> Body:
        return {
            "id": "msg_" + request_id[4:],
            "type": "message",
            "role": "assistant",
            "model": call.model,
            "content": [{"type": "text", "text": COMPLETION_TEXT}],
            "stop_reason": "max_tokens" if call.output_tokens >= call.max_tokens else "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": call.input_tokens,
                "cache_creation_input_tokens": call.cache_creation_tokens,
                "cache_read_input_tokens": call.cache_read_tokens,
                "output_tokens": call.output_tokens,
            },
        }

    def stream(self, call: Call, request_id: str, wall_s: float) -> list[tuple[str, bytes]]:
        return anthropic_stream(call, request_id)

    def rate_limited(self, info: RejectInfo) -> tuple[int, Body]:
        noun = _NOUNS.get(info.kind, "tokens")
        message = (
            f"This request would exceed the rate limit for your organization of"
            f" {int(info.capacity):,} {noun} per {_period(info.window_s)}. {_DETAILS}"
        )
        return 429, error_body("rate_limit_error", message, info.request_id)

    def too_large(self, info: RejectInfo) -> tuple[int, Body]:
        noun = _NOUNS.get(info.kind, "tokens")
        message = (
            f"Request too large: this request's {round(info.requested):,} {noun} exceed the"
            f" rate limit for your organization of {int(info.capacity):,} {noun} per"
            f" {_period(info.window_s)}. {_DETAILS}"
        )
        return 429, error_body("rate_limit_error", message, info.request_id)

    def fault(self, info: FaultInfo) -> tuple[int, Body]:
        if info.kind in _FAULTS:
            status, type_, message = _FAULTS[info.kind]
            return info.status or status, error_body(type_, message, info.request_id)
        if info.kind is FaultKind.SPEND_CAP:
            body = error_body(
                "rate_limit_error",
                "You have reached your specified API usage limits. You will regain access on"
                f" {first_of_next_month(info.wall_s)} at 00:00 UTC.",
                info.request_id,
            )
            body["error"]["details"] = {"error_code": "enforced_spend_limit_reached"}
            return info.status or 429, body
        message = (
            "This request would exceed the rate limit for your organization of 0 requests per"
            f" minute. {_DETAILS}"
        )
        return info.status or 429, error_body("rate_limit_error", message, info.request_id)

    def invalid(self, status: int, message: str) -> Body:
        type_ = "not_found_error" if status == 404 else "invalid_request_error"
        return error_body(type_, message, "req_invalid")


def _period(window_s: float) -> str:
    return "day" if window_label(window_s) == "day" else "minute"

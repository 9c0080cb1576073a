"""OpenAI chat completions: ``x-ratelimit-*`` headers with Go-duration resets (spec §2, §8)."""

from __future__ import annotations

from collections.abc import Sequence

from testing.emulator.calls import Call
from testing.emulator.formats import go_duration, retry_after_s, window_label
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
from testing.emulator.profiles.streams import openai_stream

_VISIT = "Visit https://platform.openai.com/account/rate-limits to learn more."
_QUOTA = (
    "You exceeded your current quota, please check your plan and billing details. For more"
    " information on this error, read the docs:"
    " https://platform.openai.com/docs/guides/error-codes/api-errors."
)

#: (status, message, type, code) of the fixed-text faults.
_FAULTS: dict[FaultKind, tuple[int, str, str, str | None]] = {
    FaultKind.INSUFFICIENT_QUOTA: (429, _QUOTA, "insufficient_quota", "insufficient_quota"),
    FaultKind.CREDIT_BALANCE_EXHAUSTED: (
        429,
        "Your credit balance is too low to access the API. Please go to Plans & Billing to"
        " upgrade or purchase credits.",
        "insufficient_quota",
        "credit_balance_exhausted",
    ),
    FaultKind.SPEND_CAP: (
        429,
        "You have reached your organization's spend limit. Raise it in your billing settings.",
        "insufficient_quota",
        "organization_spend_limit_exceeded",
    ),
    FaultKind.SLOW_DOWN: (
        429,
        "Please reduce your rate of requests: your traffic ramped up too quickly.",
        "requests",
        "slow_down",
    ),
    FaultKind.SERVER_ERROR: (
        500,
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
    ),
    FaultKind.OVERLOADED: (
        503,
        "The server is overloaded or not ready yet.",
        "server_error",
        "server_is_overloaded",
    ),
}


def dimension_label(kind: str, window_s: float) -> str:
    """``requests per min (RPM)``, ``tokens per day (TPD)``, ..."""
    period = window_label(window_s)
    noun, letter = {
        "requests": ("requests", "R"),
        "input_tokens": ("input tokens", "IT"),
        "output_tokens": ("output tokens", "OT"),
    }.get(kind, ("tokens", "T"))
    return f"{noun} per {period} ({letter}P{period[0].upper()})"


def error_body(message: str, type_: str, code: str | None) -> Body:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def error_type(kind: str) -> str:
    return "requests" if kind == "requests" else "tokens"


class OpenAIRules(ProfileRules):
    profile = Profile.OPENAI

    def rate_headers(self, snaps: Sequence[DimSnapshot], wall_s: float) -> Headers:
        headers: Headers = []
        for kind in ("requests", "tokens"):
            snap = binding(snaps, kind)
            if snap is not None:
                headers += [
                    (f"x-ratelimit-limit-{kind}", int_text(snap.capacity)),
                    (f"x-ratelimit-remaining-{kind}", floor_text(snap.level)),
                    (f"x-ratelimit-reset-{kind}", go_duration(snap.time_to_full_s)),
                ]
        return headers

    def retry_headers(self, wait_s: float) -> Headers:
        return [("retry-after", str(retry_after_s(wait_s)))]

    def id_headers(self, request_id: str, processing_ms: int, org: str) -> Headers:
        return [
            ("x-request-id", request_id),
            ("openai-organization", org),
            ("openai-processing-ms", str(processing_ms)),
        ]

    def success(self, call: Call, request_id: str, wall_s: float) -> Body:
        return {
            "id": "chatcmpl-" + request_id[4:],
            "object": "chat.completion",
            "created": int(wall_s),
            "model": call.model,
            "choices": [
                {
                    "index": index,
                    "message": {"role": "assistant", "content": COMPLETION_TEXT, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "length" if tokens >= call.max_tokens else "stop",
                }
                for index, tokens in enumerate(self.per_choice_tokens(call))
            ],
            "usage": {
                "prompt_tokens": call.input_tokens,
                "completion_tokens": call.output_tokens,
                "total_tokens": call.input_tokens + call.output_tokens,
                "prompt_tokens_details": {"cached_tokens": call.cache_read_tokens},
                "completion_tokens_details": {"reasoning_tokens": 0},
            },
            "system_fingerprint": "fp_emulator",
        }

    def stream(self, call: Call, request_id: str, wall_s: float) -> list[tuple[str, bytes]]:
        return openai_stream(call, request_id, wall_s, self.per_choice_tokens(call))

    def rate_limited(self, info: RejectInfo) -> tuple[int, Body]:
        message = (
            f"Rate limit reached for {info.model} in organization {info.org} on"
            f" {dimension_label(info.kind, info.window_s)}: Limit {int_text(info.capacity)},"
            f" Used {round(info.used)}, Requested {round(info.requested)}."
            f" Please try again in {go_duration(info.wait_s)}. {_VISIT}"
        )
        return 429, error_body(message, error_type(info.kind), "rate_limit_exceeded")

    def too_large(self, info: RejectInfo) -> tuple[int, Body]:
        message = (
            f"Request too large for {info.model} in organization {info.org} on"
            f" {dimension_label(info.kind, info.window_s)}: Limit {int_text(info.capacity)},"
            f" Requested {round(info.requested)}. The input or output tokens must be reduced"
            f" in order to run successfully. {_VISIT}"
        )
        return 429, error_body(message, error_type(info.kind), "rate_limit_exceeded")

    def fault(self, info: FaultInfo) -> tuple[int, Body]:
        if info.kind in _FAULTS:
            status, message, type_, code = _FAULTS[info.kind]
            return info.status or status, error_body(message, type_, code)
        wait_s = info.retry_after_s if info.retry_after_s is not None else 1.0
        message = (
            f"Rate limit reached for {info.model} in organization {info.org} on requests per"
            f" min (RPM): Limit {info.request_limit:.0f}, Used {info.request_limit:.0f},"
            f" Requested 1. Please try again in"
            f" {go_duration(wait_s)}. {_VISIT}"
        )
        return info.status or 429, error_body(message, "requests", "rate_limit_exceeded")

    def invalid(self, status: int, message: str) -> Body:
        code = "model_not_found" if status == 404 else None
        return error_body(message, "invalid_request_error", code)

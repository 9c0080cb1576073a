"""Gemini generateContent: no rate-limit headers; ``RetryInfo.retryDelay`` in the body (§5)."""

from __future__ import annotations

from collections.abc import Sequence

from testing.emulator.calls import Call
from testing.emulator.formats import protobuf_duration, window_label
from testing.emulator.kinds import FaultKind, Profile
from testing.emulator.profiles.base import (
    COMPLETION_TEXT,
    Body,
    DimSnapshot,
    FaultInfo,
    Headers,
    ProfileRules,
    RejectInfo,
    int_text,
)

_QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. For more"
    " information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits."
)
_TYPE = "type.googleapis.com/google.rpc."


def quota_id(kind: str, window_s: float) -> tuple[str, str]:
    """``(quotaMetric, quotaId)`` for a dimension kind and window."""
    per = "PerDay" if window_label(window_s) == "day" else "PerMinute"
    if kind == "requests":
        return (
            "generativelanguage.googleapis.com/generate_content_requests",
            f"GenerateRequests{per}PerProjectPerModel",
        )
    return (
        "generativelanguage.googleapis.com/generate_content_input_token_count",
        f"GenerateContentInputTokensPerModel{per.removeprefix('Per')}",
    )


def exhausted_body(
    message: str, model: str, kind: str, window_s: float, capacity: float, wait_s: float | None
) -> Body:
    metric, qid = quota_id(kind, window_s)
    details: list[Body] = [
        {
            "@type": _TYPE + "QuotaFailure",
            "violations": [
                {
                    "quotaMetric": metric,
                    "quotaId": qid,
                    "quotaDimensions": {"location": "global", "model": model},
                    "quotaValue": int_text(capacity),
                }
            ],
        },
        {
            "@type": _TYPE + "Help",
            "links": [
                {
                    "description": "Learn more about Gemini API quotas",
                    "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                }
            ],
        },
    ]
    if wait_s is not None:
        details.append({"@type": _TYPE + "RetryInfo", "retryDelay": protobuf_duration(wait_s)})
    return {
        "error": {
            "code": 429,
            "message": message,
            "status": "RESOURCE_EXHAUSTED",
            "details": details,
        }
    }


def status_body(code: int, status: str, message: str) -> Body:
    return {"error": {"code": code, "message": message, "status": status}}


class GeminiRules(ProfileRules):
    profile = Profile.GEMINI

    def rate_headers(self, snaps: Sequence[DimSnapshot], wall_s: float) -> Headers:
        return []

    def retry_headers(self, wait_s: float) -> Headers:
        return []

    def announced_wait_s(self, wait_s: float) -> float:
        return round(wait_s, 3)

    def id_headers(self, request_id: str, processing_ms: int, org: str) -> Headers:
        return [("server-timing", f"gfet4t7; dur={processing_ms}")]

    def success(self, call: Call, request_id: str, wall_s: float) -> Body:
        return {
            "candidates": [
                {
                    "content": {"parts": [{"text": COMPLETION_TEXT}], "role": "model"},
                    "finishReason": "MAX_TOKENS" if tokens >= call.max_tokens else "STOP",
                    "index": index,
                }
                for index, tokens in enumerate(self.per_choice_tokens(call))
            ],
            "usageMetadata": {
                "promptTokenCount": call.input_tokens,
                "candidatesTokenCount": call.output_tokens,
                "totalTokenCount": call.input_tokens + call.output_tokens,
            },
            "modelVersion": call.model,
            "responseId": request_id[4:],
        }

    def rate_limited(self, info: RejectInfo) -> tuple[int, Body]:
        return 429, exhausted_body(
            _QUOTA_MESSAGE, info.model, info.kind, info.window_s, info.capacity, info.wait_s
        )

    def too_large(self, info: RejectInfo) -> tuple[int, Body]:
        message = (
            f"Request too large: {round(info.requested)} input tokens exceed the quota of"
            f" {int_text(info.capacity)} per {window_label(info.window_s)}."
        )
        return 429, exhausted_body(
            message, info.model, info.kind, info.window_s, info.capacity, None
        )

    def fault(self, info: FaultInfo) -> tuple[int, Body]:
        if info.kind is FaultKind.OVERLOADED:
            body = status_body(503, "UNAVAILABLE", "The model is overloaded. Please try later.")
            return info.status or 503, body
        if info.kind is FaultKind.SERVER_ERROR:
            body = status_body(500, "INTERNAL", "An internal error has occurred.")
            return info.status or 500, body
        if info.kind in (
            FaultKind.INSUFFICIENT_QUOTA,
            FaultKind.CREDIT_BALANCE_EXHAUSTED,
            FaultKind.SPEND_CAP,
        ):
            body = exhausted_body(_QUOTA_MESSAGE, info.model, "requests", 86_400.0, 0.0, None)
            return info.status or 429, body
        wait_s = info.retry_after_s if info.retry_after_s is not None else 1.0
        body = exhausted_body(_QUOTA_MESSAGE, info.model, "requests", 60.0, 0.0, wait_s)
        return info.status or 429, body

    def invalid(self, status: int, message: str) -> Body:
        return status_body(status, "NOT_FOUND" if status == 404 else "INVALID_ARGUMENT", message)

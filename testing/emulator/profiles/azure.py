"""Azure OpenAI: integer-second resets, ``retry-after`` + ``retry-after-ms`` (spec §4, §8)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from testing.emulator.calls import Call
from testing.emulator.formats import retry_after_ms, retry_after_s
from testing.emulator.kinds import FaultKind, Profile
from testing.emulator.profiles.base import (
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
from testing.emulator.profiles.openai import OpenAIRules

_QUOTA_LINK = (
    "Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase"
    " the default rate limit."
)

_FAULTS: dict[FaultKind, tuple[int, str, str]] = {
    FaultKind.INSUFFICIENT_QUOTA: (
        429,
        "insufficient_quota",
        "You exceeded your current quota, please check your plan and billing details.",
    ),
    FaultKind.SERVER_ERROR: (
        500,
        "InternalServerError",
        "The server had an error while processing your request.",
    ),
    FaultKind.OVERLOADED: (
        503,
        "ServiceUnavailable",
        "The service is temporarily unable to process your request. Please try again later.",
    ),
}
_FAULTS[FaultKind.CREDIT_BALANCE_EXHAUSTED] = _FAULTS[FaultKind.INSUFFICIENT_QUOTA]
_FAULTS[FaultKind.SPEND_CAP] = _FAULTS[FaultKind.INSUFFICIENT_QUOTA]


def error_body(code: str, message: str) -> Body:
    return {"error": {"code": code, "message": message}}


def rate_message(api_version: str, kind: str, seconds: int) -> str:
    what = "call rate limit" if kind == "requests" else "token rate limit"
    return (
        f"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version"
        f" {api_version} have exceeded {what} of your current OpenAI S0 pricing tier."
        f" Please retry after {seconds} seconds. {_QUOTA_LINK}"
    )


class AzureRules(ProfileRules):
    profile = Profile.AZURE

    def __init__(self) -> None:
        self._openai = OpenAIRules()

    def rate_headers(self, snaps: Sequence[DimSnapshot], wall_s: float) -> Headers:
        headers: Headers = []
        for kind in ("requests", "tokens"):
            snap = binding(snaps, kind)
            if snap is not None:
                headers += [
                    (f"x-ratelimit-limit-{kind}", int_text(snap.capacity)),
                    (f"x-ratelimit-remaining-{kind}", floor_text(snap.level)),
                    (f"x-ratelimit-reset-{kind}", str(math.ceil(snap.time_to_full_s - 1e-9))),
                ]
        return headers

    def retry_headers(self, wait_s: float) -> Headers:
        return [
            ("retry-after", str(retry_after_s(wait_s))),
            ("retry-after-ms", str(retry_after_ms(wait_s))),
        ]

    def announced_wait_s(self, wait_s: float) -> float:
        return retry_after_ms(wait_s) / 1000.0

    def id_headers(self, request_id: str, processing_ms: int, org: str) -> Headers:
        return [("apim-request-id", request_id), ("x-ms-region", "Emulated Region")]

    def success(self, call: Call, request_id: str, wall_s: float) -> Body:
        return self._openai.success(call, request_id, wall_s)

    def stream(self, call: Call, request_id: str, wall_s: float) -> list[tuple[str, bytes]]:
        return self._openai.stream(call, request_id, wall_s)

    def rate_limited(self, info: RejectInfo) -> tuple[int, Body]:
        return 429, error_body("429", rate_message(info.api_version, info.kind, info.retry_after_s))

    def too_large(self, info: RejectInfo) -> tuple[int, Body]:
        message = (
            f"Request too large: requested {round(info.requested)} tokens exceed the token rate"
            f" limit of {int_text(info.capacity)} of your current OpenAI S0 pricing tier."
            f" {_QUOTA_LINK}"
        )
        return 429, error_body("429", message)

    def fault(self, info: FaultInfo) -> tuple[int, Body]:
        if info.kind in _FAULTS:
            status, code, message = _FAULTS[info.kind]
            return info.status or status, error_body(code, message)
        seconds = retry_after_s(info.retry_after_s if info.retry_after_s is not None else 1.0)
        return info.status or 429, error_body(
            "429", rate_message(info.api_version, "tokens", seconds)
        )

    def invalid(self, status: int, message: str) -> Body:
        return error_body("DeploymentNotFound" if status == 404 else "BadRequest", message)

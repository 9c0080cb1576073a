"""Errors in the shape the caller's SDK reads: OpenAI's error object, or Anthropic's on
``/v1/messages``; and the mapping of the throttle's typed errors onto HTTP."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from throttle.errors import (
    ClientRequestError,
    CostExceedsCapacityError,
    InvalidRequestError,
    OverloadedError,
    ProviderError,
    QuotaExhaustedError,
    RateLimitedError,
    RequestTooLargeError,
    StorageError,
    ThrottleDeadlineError,
    ThrottleError,
    UnknownGroupError,
)

#: Anthropic's error type per status.
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "api_error",
    504: "api_error",
    529: "overloaded_error",
}


@dataclass
class GatewayError(Exception):
    """An answer other than success: status, message, OpenAI's ``type`` and ``code``,
    the parameter at fault, extra headers (Retry-After)."""

    status: int
    message: str
    type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message

    def openai_body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def anthropic_body(self) -> dict[str, Any]:
        kind = _ANTHROPIC_TYPES.get(self.status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": self.message}}


def bad_request(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, message, param=param)


def from_exception(exc: BaseException) -> GatewayError:
    """The HTTP answer for an error of enqueue or of the task."""
    message = str(exc)
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, UnknownGroupError):
        return GatewayError(404, message, code="model_not_found", param="model")
    if isinstance(exc, CostExceedsCapacityError | RequestTooLargeError):
        return GatewayError(400, message, code="request_too_large")
    if isinstance(exc, InvalidRequestError):
        return GatewayError(400, message)
    if isinstance(exc, QuotaExhaustedError):
        return GatewayError(429, message, "insufficient_quota", "insufficient_quota")
    if isinstance(exc, RateLimitedError):
        return GatewayError(429, message, "rate_limit_error", "rate_limit_exceeded")
    if isinstance(exc, OverloadedError):
        return GatewayError(503, message, "server_error", "overloaded")
    if isinstance(exc, ClientRequestError):
        return GatewayError(exc.status or 400, message)
    if isinstance(exc, StorageError):
        return GatewayError(503, message, "server_error", "storage_unavailable")
    if isinstance(exc, ThrottleDeadlineError | TimeoutError):
        return GatewayError(504, message or "timed out", "server_error", "timeout")
    if isinstance(exc, ProviderError):
        return GatewayError(502, message, "server_error", "upstream_error")
    if isinstance(exc, ThrottleError):
        return GatewayError(500, message, "server_error")
    return GatewayError(500, "internal error", "server_error")


def from_relayed(error: Mapping[str, Any]) -> GatewayError:
    """The HTTP answer for a streamed task's relayed failure (workers/relay.py)."""
    kind, message = str(error.get("type")), str(error.get("message"))
    status = error.get("status")
    known = {
        "UnknownGroupError": (404, "invalid_request_error", "model_not_found"),
        "InvalidRequestError": (400, "invalid_request_error", None),
        "CostExceedsCapacityError": (400, "invalid_request_error", "request_too_large"),
        "QuotaExhaustedError": (429, "insufficient_quota", "insufficient_quota"),
        "ThrottleDeadlineError": (504, "server_error", "timeout"),
        "StorageError": (503, "server_error", "storage_unavailable"),
    }
    if kind in known:
        code_status, type_, code = known[kind]
        return GatewayError(code_status, message, type_, code)
    if kind == "ClientRequestError" and isinstance(status, int):
        return GatewayError(status, message)
    return GatewayError(502, message, "server_error", "upstream_error")

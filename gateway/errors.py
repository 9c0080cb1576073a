"""Errors in the shape the caller's SDK reads: OpenAI's error object, or Anthropic's on
``/v1/messages``; and the mapping of the throttle's typed errors onto HTTP."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from throttle import errors as throttle_errors
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

    def body(self, anthropic: bool) -> dict[str, Any]:
        """The body in the caller's API's shape."""
        return self.anthropic_body() if anthropic else self.openai_body()

    def sse_event(self, anthropic: bool) -> bytes:
        """A failure after a stream's events went out: the ``error`` event both SDKs
        raise on, with the body in the caller's API's shape."""
        return b"event: error\ndata: " + json.dumps(self.body(anthropic)).encode() + b"\n\n"


def bad_request(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, message, param=param)


#: The answer for each typed error, most specific first: (class, status, OpenAI's
#: ``type``, ``code``, ``param``).
_ANSWERS: tuple[tuple[type[ThrottleError], int, str, str | None, str | None], ...] = (
    (UnknownGroupError, 404, "invalid_request_error", "model_not_found", "model"),
    (CostExceedsCapacityError, 400, "invalid_request_error", "request_too_large", None),
    (RequestTooLargeError, 400, "invalid_request_error", "request_too_large", None),
    (InvalidRequestError, 400, "invalid_request_error", None, None),
    (QuotaExhaustedError, 429, "insufficient_quota", "insufficient_quota", None),
    (RateLimitedError, 429, "rate_limit_error", "rate_limit_exceeded", None),
    (OverloadedError, 503, "server_error", "overloaded", None),
    (ClientRequestError, 400, "invalid_request_error", None, None),
    (StorageError, 503, "server_error", "storage_unavailable", None),
    (ThrottleDeadlineError, 504, "server_error", "timeout", None),
    (ProviderError, 502, "server_error", "upstream_error", None),
    (ThrottleError, 500, "server_error", None, None),
)
#: A provider's refusal of the workers' own credential is the server's problem: a
#: 401 would tell the caller its gateway key is wrong.
_UPSTREAM_AUTH = frozenset({401, 403, 407})


def _typed(kind: type[ThrottleError], message: str, status: int | None) -> GatewayError:
    _cls, answer, type_, code, param = next(a for a in _ANSWERS if issubclass(kind, a[0]))
    if issubclass(kind, ClientRequestError) and status is not None:
        if status in _UPSTREAM_AUTH:
            return GatewayError(502, message, "server_error", "upstream_auth_error")
        answer = status
    return GatewayError(answer, message, type_, code, param)


def from_exception(exc: BaseException) -> GatewayError:
    """The HTTP answer for an error of enqueue or of the task (an untyped one's text
    is not shown: it may hold anything)."""
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, ThrottleError):
        return _typed(type(exc), str(exc), getattr(exc, "status", None))
    if isinstance(exc, TimeoutError):
        return GatewayError(504, str(exc) or "timed out", "server_error", "timeout")
    return GatewayError(500, "internal error", "server_error")


def from_relayed(error: Mapping[str, Any]) -> GatewayError:
    """The HTTP answer for a streamed task's relayed failure (workers/relay.py:
    ``type`` names the error class, ``message``, ``status``)."""
    kind = getattr(throttle_errors, str(error.get("type")), None)
    status = error.get("status")
    if isinstance(kind, type) and issubclass(kind, ThrottleError):
        return _typed(kind, str(error.get("message")), status if isinstance(status, int) else None)
    return GatewayError(500, "internal error", "server_error")

"""Every exception the project raises, under one root: :class:`ThrottleError`.

Hierarchy::

    ThrottleError
    ├── ConfigError                 bad configuration; names the offending key or text
    │   └── LimitSpecError          a limit such as "90k/min" that cannot be parsed
    ├── UnknownGroupError           a provider/model/group that is not configured
    ├── InvalidRequestError         a malformed completion request (messages, max_tokens...)
    ├── CostExceedsCapacityError    a cost that no bucket could ever admit (fail fast)
    ├── StorageError                Redis unreachable or misbehaving (wraps the driver error)
    ├── ThrottleDeadlineError       the throttle budget (waits, 429s) ran out
    └── ProviderError               anything the LLM provider answered or failed to answer
        ├── RateLimitedError        retryable 429: carries ``wait_s``
        ├── OverloadedError         provider-wide overload (Anthropic 529, 503): retryable
        ├── TransportError          connection reset, timeout: retryable
        └── TerminalProviderError   never retry
            ├── QuotaExhaustedError insufficient_quota, spend caps, day-long waits
            ├── RequestTooLargeError a request larger than the provider's limit
            └── ClientRequestError  400/401/403/404 and other 4xx

Messages never contain API keys or prompts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from throttle.providers.observation import Observation


class ThrottleError(Exception):
    """Root of every error raised by this project.

    Every subclass can be rebuilt from its ``args`` (``type(exc)(*exc.args)``), which is
    how Celery's result backend brings a task's exception back to the caller typed.
    """


class ConfigError(ThrottleError):
    """The configuration is invalid. The message names the offending key."""


class LimitSpecError(ConfigError):
    """A limit specification such as ``"90k/min"`` could not be parsed."""

    def __init__(self, text: object, reason: str) -> None:
        super().__init__(text, reason)
        self.text = text
        self.reason = reason

    def __str__(self) -> str:
        return f"invalid limit {self.text!r}: {self.reason}"


class UnknownGroupError(ThrottleError):
    """A provider, model or limit group that the configuration does not define."""


class InvalidRequestError(ThrottleError):
    """A completion request that is malformed; it is rejected before any admission."""


class ReservationHandleError(ThrottleError, ValueError):
    """A reservation handle that is not one the limiter issued for this group."""


class CostExceedsCapacityError(ThrottleError):
    """A request costs more than a dimension can ever hold, so it could never run."""

    def __init__(self, group: str, dimension: str, cost: float, capacity: float) -> None:
        super().__init__(group, dimension, cost, capacity)
        self.group = group
        self.dimension = dimension
        self.cost = cost
        self.capacity = capacity

    def __str__(self) -> str:
        return (
            f"{self.group}: cost {self.cost:g} on {self.dimension!r} exceeds its capacity"
            f" {self.capacity:g}; the request can never be admitted"
        )


class StorageError(ThrottleError):
    """Redis could not be reached or answered with an error."""


class ThrottleDeadlineError(ThrottleError):
    """The task's throttle budget (time spent waiting for slots and 429 pauses) ran out."""


class ProviderError(ThrottleError):
    """An error returned by, or on the way to, an LLM provider."""

    #: HTTP status, when the provider answered.
    status: int | None = None
    #: Whether waiting and sending the request again can succeed.
    retryable: bool = False
    #: The limit headers of the failed response, when the provider answered; the
    #: HTTP client attaches it so the throttle can learn from 429s too.
    observation: Observation | None = None

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RateLimitedError(ProviderError):
    """A retryable 429. ``wait_s`` is the provider's Retry-After (or derived) wait."""

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        wait_s: float | None = None,
        dimension: str | None = None,
        status: int | None = 429,
    ) -> None:
        super().__init__(message, status=status)
        self.wait_s = wait_s
        self.dimension = dimension


class OverloadedError(ProviderError):
    """The provider is overloaded as a whole (Anthropic 529, HTTP 503). Retryable."""

    retryable = True

    def __init__(self, message: str, *, wait_s: float | None = None, status: int | None = None):
        super().__init__(message, status=status)
        self.wait_s = wait_s


class TransportError(ProviderError):
    """The request did not complete: connection refused or reset, timeout. Retryable."""

    retryable = True


class TerminalProviderError(ProviderError):
    """An answer that no amount of waiting will change."""

    retryable = False


class QuotaExhaustedError(TerminalProviderError):
    """Billing or quota exhausted (insufficient_quota, spend caps, day-long waits)."""


class RequestTooLargeError(TerminalProviderError):
    """The request alone is larger than the provider's limit."""


class ClientRequestError(TerminalProviderError):
    """The provider rejected the request itself (400, 401, 403, 404...)."""


class StreamBrokenError(TerminalProviderError):
    """A streamed answer failed after part of it was passed on (a dropped connection,
    an error event): sending the request again would repeat what the caller has."""

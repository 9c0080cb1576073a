"""Transport retries: which failed attempts of one client call are retried, how long
each wait is (seconds), and when to give up (tenacity underneath, never leaked)."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
)

from throttle.errors import ConfigError, OverloadedError, TransportError

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class TransportRetry:
    """Bounds of the in-client retries of transport errors and 5xx.

    Waits follow ``min(max_wait_s, initial_wait_s x 2^k) x U(0.75, 1.0)``, the
    official SDKs' schedule; no retry starts once ``max_total_s`` would be exceeded.
    """

    max_attempts: int = 3
    initial_wait_s: float = 0.5
    max_wait_s: float = 8.0
    max_total_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError("TransportRetry.max_attempts must be >= 1")
        if not 0 <= self.initial_wait_s <= self.max_wait_s:
            raise ConfigError("TransportRetry needs 0 <= initial_wait_s <= max_wait_s")
        if self.max_total_s <= 0:
            raise ConfigError("TransportRetry.max_total_s must be positive")

    def is_retried(self, exc: BaseException) -> bool:
        """Whether a failed attempt is tried again: a transport error, or an overload
        whose retry-after (if any) is at most :attr:`max_wait_s`."""
        if isinstance(exc, OverloadedError):
            return exc.wait_s is None or exc.wait_s <= self.max_wait_s
        return isinstance(exc, TransportError)

    def wait_s(self, state: RetryCallState) -> float:
        """Seconds to wait before the next attempt: the jittered backoff, or an
        overload's retry-after when that is longer."""
        backoff_s = min(self.max_wait_s, self.initial_wait_s * 2.0 ** (state.attempt_number - 1))
        backoff_s *= 1.0 - 0.25 * random.random()
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, OverloadedError) and exc.wait_s is not None:
            return max(backoff_s, exc.wait_s)
        return backoff_s

    def run(self, attempt: Callable[[int], T], *, name: str, sleep: Callable[[float], None]) -> T:
        """``attempt(n)`` for n = 1, 2, ... until one returns, a failure is not retried,
        or the bounds are reached; the last failure is raised as it is. ``name`` (the
        provider's) heads the log lines; ``sleep`` waits that many seconds."""
        attempts = 0

        def counted() -> T:
            nonlocal attempts
            attempts += 1
            return attempt(attempts)

        def log_retry(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            wait_s = state.next_action.sleep if state.next_action is not None else 0.0
            logger.warning(
                "%s: attempt %d failed (%s: %s); retrying in %.2fs",
                name,
                state.attempt_number,
                type(exc).__name__,
                exc,
                wait_s,
            )

        retrying = Retrying(
            stop=stop_after_attempt(self.max_attempts) | stop_before_delay(self.max_total_s),
            wait=self.wait_s,
            retry=retry_if_exception(self.is_retried),
            sleep=sleep,
            before_sleep=log_retry,
            reraise=True,
        )
        try:
            return retrying(counted)
        except RetryError as exc:  # not expected with reraise=True; never leak tenacity
            raise TransportError(
                f"{name}: gave up after {attempts} attempts"
            ) from exc.last_attempt.exception()


#: The retries of a client given none.
DEFAULT_RETRY = TransportRetry()

"""What one provider response said about its rate limits, in one normalised shape.

Each provider spells its limits differently (Go durations, RFC 3339 instants, integer
seconds, a JSON body). The header parsers turn all of them into an :class:`Observation`:
per *dimension* the bucket's limit, what remains after this request, and the time until
the bucket is full again (``reset_s``), all relative to the moment the response was
received, so no provider clock leaks into the limiter.

Dimension names match the limit model (:mod:`throttle.limits`):

=====================  ==============================================================
``requests``           requests per minute
``requests_day``       requests per day (Groq's ``x-ratelimit-*-requests``)
``tokens``             tokens per minute (OpenAI and Azure: prompt + completion;
                       Anthropic: input + output, or the binding workspace cap)
``input_tokens``       Anthropic ITPM
``output_tokens``      Anthropic OTPM
``tokens_usage_based`` OpenAI's ``*_usage_based`` variant, when sent
=====================  ==============================================================

Any field may be ``None``: the provider did not send it, sent ``-1`` or sent garbage.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

REQUESTS = "requests"
REQUESTS_DAY = "requests_day"
TOKENS = "tokens"
TOKENS_DAY = "tokens_day"
INPUT_TOKENS = "input_tokens"
OUTPUT_TOKENS = "output_tokens"


@dataclass(frozen=True)
class DimensionState:
    """One bucket as the provider reported it.

    ``remaining`` is after this request's debit. ``remaining_granularity`` is the step
    the provider rounds ``remaining`` to (Anthropic tokens: 1,000), so a consumer that
    clamps its local level to ``remaining`` can allow for ``granularity / 2`` of error.
    """

    limit: float | None = None
    remaining: float | None = None
    #: Seconds from receipt until the bucket is full again.
    reset_s: float | None = None
    remaining_granularity: float = 1.0

    @property
    def used(self) -> float | None:
        """``limit - remaining``, when both are known and consistent."""
        if self.limit is None or self.remaining is None or self.remaining > self.limit:
            return None
        return self.limit - self.remaining

    @property
    def refill_rate_per_s(self) -> float | None:
        """Units per second implied by ``used / reset_s`` (a continuous bucket).

        OpenAI: (160000 - 159976) / 0.009 s = 2666.7 tokens/s = 160000 per 60 s.
        ``None`` when the bucket is full, a value is unknown, or the rounding of
        ``remaining`` is coarser than the amount used (Anthropic's tokens).
        """
        used = self.used
        if used is None or self.reset_s is None or self.reset_s <= 0 or used <= 0:
            return None
        if used < self.remaining_granularity:
            return None
        return used / self.reset_s

    @property
    def implied_window_s(self) -> float | None:
        """``limit / refill rate``: 60 for a per-minute bucket, 86,400 for a per-day one."""
        rate = self.refill_rate_per_s
        if rate is None or self.limit is None:
            return None
        return self.limit / rate

    @property
    def implied_window_bounds_s(self) -> tuple[float, float] | None:
        """The range :attr:`implied_window_s` can have, given that ``remaining`` is rounded
        down to ``remaining_granularity``: with one request used of a 20-request bucket,
        a level of 19.7 reported as 19 makes a 1 s window look like 0.3 s."""
        used = self.used
        if used is None or self.limit is None or self.reset_s is None or self.reset_s <= 0:
            return None
        step = max(self.remaining_granularity, 0.0)
        if used + step <= 0:
            return None
        shortest = self.limit * self.reset_s / (used + step)
        longest = self.limit * self.reset_s / (used - step) if used > step else math.inf
        return shortest, longest

    def wait_for_s(self, cost: float, *, window_s: float) -> float | None:
        """Time until ``cost`` fits: ``max(0, cost - remaining) / (limit / window_s)``.

        A reset is the time until *full*, not until the next request fits (providers.md
        §7.4), hence the explicit refill window.
        """
        if self.limit is None or self.remaining is None or self.limit <= 0 or window_s <= 0:
            return None
        deficit = cost - self.remaining
        return max(0.0, deficit) / (self.limit / window_s)


@dataclass(frozen=True)
class Observation:
    """Every limit signal of one response.

    ``received_at`` is the local wall-clock epoch (seconds) at which the response
    arrived; it dates the reading, it is never used to compute a wait. ``retry_after_s``
    is the header wait (``retry-after-ms``, else ``retry-after``), or Gemini's
    ``RetryInfo.retryDelay`` since Gemini sends no headers.
    """

    received_at: float
    dimensions: Mapping[str, DimensionState] = field(default_factory=dict)
    retry_after_s: float | None = None

    def __post_init__(self) -> None:
        # A private copy: plain data, so it pickles and deep-copies.
        object.__setattr__(self, "dimensions", dict(self.dimensions))

    def __hash__(self) -> int:
        return hash((self.received_at, tuple(sorted(self.dimensions.items())), self.retry_after_s))

    def get(self, dimension: str) -> DimensionState | None:
        return self.dimensions.get(dimension)

    @property
    def is_empty(self) -> bool:
        """True when the response carried no usable limit signal at all."""
        return not self.dimensions and self.retry_after_s is None

    @property
    def exhausted(self) -> tuple[str, ...]:
        """Dimensions the provider reports as empty (``remaining`` below one unit)."""
        return tuple(
            name
            for name, state in self.dimensions.items()
            if state.remaining is not None
            and state.remaining < max(1.0, state.remaining_granularity / 2)
        )

"""What a request costs each limit at admission, and how to settle once usage is known.

*Reserve, then settle* (DESIGN principle 7): admission debits an estimate on every
dimension; the response's usage then yields per-dimension **deltas** (``actual -
reserved``, negative = refund) that the limiter applies. Each provider accounts
differently, and settlement must copy the provider, never be more generous than it:
refunding tokens the provider keeps would let us send more than it accepts.

Dimension names (``requests``, ``requests_day``, ``tokens``, ``tokens_day``,
``input_tokens``, ``output_tokens``) match :mod:`throttle.limits`. Costs are given for
every dimension a provider *may* have; :func:`restrict` keeps those a configured limit
group actually has.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Literal, get_args

from throttle.providers.observation import (
    INPUT_TOKENS,
    OUTPUT_TOKENS,
    REQUESTS,
    REQUESTS_DAY,
    TOKENS,
    TOKENS_DAY,
)
from throttle.providers.usage import Usage

#: Dimensions that count requests rather than tokens.
REQUEST_DIMENSIONS: frozenset[str] = frozenset({REQUESTS, REQUESTS_DAY})

#: How the output share of a request is counted (``[providers.X] accounting = {
#: output = "..." }``):
#:
#: - ``reserve``: the worst case (``max_tokens`` x ``n``) at admission, never given
#:   back (the provider keeps it: OpenAI, Azure);
#: - ``settle``: the worst case at admission, trued up to the reported usage at the
#:   end (unused output refunded): safe for a provider that charges output as it is
#:   generated (Anthropic OTPM) or refunds it (a usage-based vLLM gateway);
#: - ``realtime``: nothing at admission, the actual output debited at the end. Only
#:   as safe as the provider's own check: requests admitted together can overrun an
#:   output limit before their usage is known.
OutputMode = Literal["reserve", "settle", "realtime"]
OUTPUT_MODES: tuple[str, ...] = get_args(OutputMode)


@dataclass(frozen=True)
class Reservation:
    """What admission debited, and how that splits into prompt and output shares.

    Keep it with the task between admission and settlement; it is plain data
    (``dataclasses.asdict`` serialises it).
    """

    costs: Mapping[str, float]
    #: The prompt-token estimate included in the token costs.
    input_tokens: float
    #: The output tokens reserved at admission (``n x max_tokens``, or 0 when the
    #: provider charges output as it is generated).
    output_tokens: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "costs", dict(self.costs))


def restrict(costs: Mapping[str, float], dimensions: Iterable[str]) -> dict[str, float]:
    """Only the entries of ``costs`` whose dimension is in ``dimensions``."""
    wanted = set(dimensions)
    return {name: value for name, value in costs.items() if name in wanted}


def rejected_deltas(reservation: Reservation) -> dict[str, float]:
    """Deltas for a request the provider rejected with a 429.

    A rejected request debits no tokens at the provider, but counts as a request
    (OpenAI: "failed requests count toward limits"), so token dimensions are refunded
    and request dimensions are kept.
    """
    return {
        name: -cost
        for name, cost in reservation.costs.items()
        if name not in REQUEST_DIMENSIONS and cost
    }


def _mirror(delta: float, *names: str) -> dict[str, float]:
    return dict.fromkeys(names, float(delta))


@dataclass(frozen=True)
class UpfrontTokens:
    """OpenAI, Azure OpenAI and OpenAI-compatible servers: output is charged up front.

    Admission: ``tokens = prompt estimate + output budget`` where the budget is
    ``n x max_tokens`` (Azure: ``max(n, best_of) x max_tokens``); ``requests = 1``.
    The per-day twins (``tokens_day``, ``requests_day``) cost the same.

    Settlement: OpenAI and Azure take ``max_tokens`` from the bucket when the request
    starts and do not give the unused part back (Azure measured: "full max_tokens
    deducted, never refunded"; OpenAI: "maximum of max_tokens and the estimated number
    of tokens"). Refunding unused output here would make our bucket fuller than
    theirs, and the next requests would meet 429s. So the output share is never
    refunded; it is only debited if usage somehow exceeds it. The prompt share *is*
    trued up both ways: the provider charges its own character-based estimate, which
    is not observable; the reported ``prompt_tokens`` is our best measure of it, and
    correcting toward it also fixes our estimator's drift. Servers that do refund
    (self-hosted vLLM behind a usage-based limiter) use ``output="settle"``.
    """

    output: OutputMode = "reserve"

    def with_output(self, mode: OutputMode) -> UpfrontTokens:
        return replace(self, output=mode)

    def reserve(self, *, input_tokens: float, output_tokens: float) -> Reservation:
        output = 0.0 if self.output == "realtime" else output_tokens
        tokens = input_tokens + output
        costs = {REQUESTS: 1.0, REQUESTS_DAY: 1.0, TOKENS: tokens, TOKENS_DAY: tokens}
        return Reservation(costs, input_tokens, output)

    def settle(self, reservation: Reservation, usage: Usage | None) -> dict[str, float]:
        if usage is None:
            return {}  # no usage reported: keep the whole reservation, as the provider does
        input_delta = usage.input_tokens - reservation.input_tokens
        output_delta = usage.output_tokens - reservation.output_tokens
        if self.output == "reserve":
            output_delta = max(0.0, output_delta)
        return _mirror(input_delta + output_delta, TOKENS, TOKENS_DAY)


@dataclass(frozen=True)
class SplitTokens:
    """Anthropic: input and output tokens are separate buckets (ITPM, OTPM).

    Admission: ``input_tokens`` = input estimate (input + cache creation; cache reads
    are excluded, except for models where they count: ``count_cache_reads``).
    ``output_tokens`` = ``max_tokens`` by default (*settle*). Anthropic (2026 docs)
    charges output as it is generated and lets a request in while any output capacity
    is left; reserving nothing (*realtime*) would let every request admitted together
    overrun the OTPM limit before one usage is known (measured: 2.5x the limit in one
    window, 5-11% 429s). ``tokens`` (the combined header bucket) gets the sum.

    Settlement: input is trued up to the counted input; output to the actual output
    (the unused reservation refunded; *reserve* keeps it).
    """

    output: OutputMode = "settle"
    count_cache_reads: bool = False

    def with_output(self, mode: OutputMode) -> SplitTokens:
        return replace(self, output=mode)

    def reserve(self, *, input_tokens: float, output_tokens: float) -> Reservation:
        output = 0.0 if self.output == "realtime" else output_tokens
        costs = {
            REQUESTS: 1.0,
            INPUT_TOKENS: input_tokens,
            OUTPUT_TOKENS: output,
            TOKENS: input_tokens + output,
        }
        return Reservation(costs, input_tokens, output)

    def counted_input(self, usage: Usage) -> int:
        """Input tokens the ITPM bucket counts for ``usage``."""
        if self.count_cache_reads:
            return usage.input_tokens
        return usage.input_tokens - usage.cache_read_input_tokens

    def settle(self, reservation: Reservation, usage: Usage | None) -> dict[str, float]:
        if usage is None:
            return {}
        input_delta = self.counted_input(usage) - reservation.input_tokens
        output_delta = usage.output_tokens - reservation.output_tokens
        if self.output == "reserve":
            output_delta = max(0.0, output_delta)
        return {
            INPUT_TOKENS: float(input_delta),
            OUTPUT_TOKENS: float(output_delta),
            TOKENS: float(input_delta + output_delta),
        }


@dataclass(frozen=True)
class InputOnlyTokens:
    """Gemini: TPM counts input tokens only; output is not rate-limited.

    Admission: ``tokens`` = input estimate, ``requests`` and ``requests_day`` = 1.
    Settlement: ``tokens`` trued up to ``promptTokenCount`` both ways.
    """

    def with_output(self, mode: OutputMode) -> InputOnlyTokens:
        raise ValueError("this provider does not limit output tokens: nothing to account")

    def reserve(self, *, input_tokens: float, output_tokens: float) -> Reservation:
        costs = {REQUESTS: 1.0, REQUESTS_DAY: 1.0, TOKENS: input_tokens, TOKENS_DAY: input_tokens}
        return Reservation(costs, input_tokens, 0.0)

    def settle(self, reservation: Reservation, usage: Usage | None) -> dict[str, float]:
        if usage is None:
            return {}
        return _mirror(usage.input_tokens - reservation.input_tokens, TOKENS, TOKENS_DAY)


#: Any of the accounting policies above.
Accounting = UpfrontTokens | SplitTokens | InputOnlyTokens

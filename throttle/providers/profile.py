"""The contract every provider profile fulfils, and the parts they share.

A profile is a stateless, frozen description of one provider API. It knows how to:

* build the HTTP request (:meth:`Profile.build_request`), the key passed in at call time;
* find and normalise the usage in a response (:meth:`Profile.parse_usage`);
* read the response's limit signals (:meth:`Profile.parse_observation`);
* classify a failed response into a typed error (:meth:`Profile.classify`);
* price a request at admission (:meth:`Profile.reserve`) and settle it from the
  reported usage (:meth:`Profile.settle`), the provider's way.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from datetime import datetime

from throttle.errors import InvalidRequestError, ProviderError
from throttle.providers.accounting import Accounting, Reservation
from throttle.providers.classify import DEFAULT_POLICY, ClassifyPolicy, classify_response
from throttle.providers.credentials import Secret
from throttle.providers.headers import HeadersLike, HeaderView
from throttle.providers.observation import Observation
from throttle.providers.request import HttpRequest, Message
from throttle.providers.usage import Usage

#: A response body: raw bytes or text, or JSON already decoded.
Body = bytes | str | Mapping[str, object] | None

#: Params a caller may not override: the profile sets them from the arguments.
RESERVED_PARAMS: frozenset[str] = frozenset(
    {"model", "messages", "max_tokens", "max_completion_tokens", "stream"}
)


def positive_int_param(params: Mapping[str, object], name: str, default: int = 1) -> int:
    """``params[name]`` as a positive int (``n``, ``best_of``), or ``default``."""
    value = params.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequestError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_params(params: Mapping[str, object]) -> None:
    clash = sorted(RESERVED_PARAMS & set(params))
    if clash:
        raise InvalidRequestError(
            f"params may not set {clash}: pass model, messages, max_tokens (or"
            " max_completion_tokens) and stream as arguments"
        )


class Profile(ABC):
    """One provider API. Subclasses are frozen dataclasses, safe to share across threads."""

    #: Registry name, also used in exception messages.
    name: str
    #: Every limit dimension the provider enforces; a limit group uses a subset.
    dimensions: tuple[str, ...]
    #: Where the public service lives; ``None`` when the caller must say.
    default_base_url: str | None
    #: Admission and settlement rules.
    accounting: Accounting
    #: Whether a credential is required (self-hosted servers often need none).
    requires_key: bool = True

    @abstractmethod
    def build_request(
        self,
        *,
        base_url: str,
        model: str,
        messages: Sequence[Message],
        max_tokens: int,
        params: Mapping[str, object],
        api_key: Secret | None,
    ) -> HttpRequest:
        """The HTTP request for one completion; raises InvalidRequestError if malformed."""

    @abstractmethod
    def parse_usage(self, body: object) -> Usage | None:
        """Normalised usage from a decoded success body, or ``None``."""

    @abstractmethod
    def parse_headers(
        self, headers: HeadersLike | HeaderView | None, *, received_at: float
    ) -> Observation:
        """Limit headers only (see :mod:`throttle.providers.headers`)."""

    def parse_observation(
        self, headers: HeadersLike | HeaderView | None, body: Body, *, received_at: float
    ) -> Observation:
        """Every limit signal of a response. Profiles with body signals extend this."""
        return self.parse_headers(headers, received_at=received_at)

    def classify(
        self,
        status: int,
        headers: HeadersLike | HeaderView | None,
        body: Body,
        *,
        observation: Observation | None = None,
        policy: ClassifyPolicy = DEFAULT_POLICY,
        reference: datetime | None = None,
    ) -> ProviderError | None:
        """The typed error for a response, or ``None`` on success."""
        return classify_response(
            status,
            headers,
            body,
            provider=self.name,
            policy=policy,
            observation=observation,
            reference=reference,
        )

    def output_budget(self, max_tokens: int, params: Mapping[str, object]) -> float:
        """Output tokens the provider counts at admission: ``n x max_tokens``."""
        return float(max_tokens * positive_int_param(params, "n"))

    def reserve(
        self,
        *,
        input_tokens: float,
        max_tokens: int,
        params: Mapping[str, object] | None = None,
    ) -> Reservation:
        """Admission costs for a request whose prompt is estimated at ``input_tokens``."""
        if not input_tokens >= 0:
            raise InvalidRequestError(f"input token estimate must be >= 0: {input_tokens!r}")
        budget = self.output_budget(max_tokens, params or {})
        return self.accounting.reserve(input_tokens=float(input_tokens), output_tokens=budget)

    def settle(self, reservation: Reservation, usage: Usage | None) -> dict[str, float]:
        """Per-dimension deltas (``actual - reserved``; negative refunds) after the call."""
        return self.accounting.settle(reservation, usage)

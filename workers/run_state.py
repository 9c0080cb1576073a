"""What one run of the throttle is about and what it ends in: the call, the state that
travels with its task across parks and retries (plain JSON), and the outcomes that the
Celery task (:mod:`workers.task`) turns into acks, parks and retries."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from throttle.errors import ThrottleError
from throttle.limits import LimitGroup
from throttle.providers.accounting import Reservation
from throttle.providers.client import ProviderResponse
from throttle.providers.request import Message
from throttle.providers.sse import SseEvent


@dataclass(frozen=True)
class CompletionCall:
    """What the caller asked for. Holds the prompt: never log it."""

    provider: str
    model: str
    messages: Sequence[Message] = field(repr=False)
    max_tokens: int
    tenant: str | None = None
    credential: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict, repr=False)
    #: Sent as ``x-client-request-id`` so the provider (and our emulator) can tell a
    #: retried request from a new one; the Celery task id.
    request_id: str | None = None
    #: The fair scheduler's priority lane (None: the configured default).
    lane: str | None = None
    #: Ask the provider for a stream and pass its events to the run's sink.
    stream: bool = False


@dataclass
class ThrottleState:
    """Facts that travel with a task across parks and retries (plain JSON)."""

    #: Wall-clock epoch seconds after which waiting is given up.
    deadline_at_s: float
    #: The limiter's handle of the current reservation (``Admission.reservation``).
    reservation: str | None = None
    #: Costs reserved per limit-group dimension, and the provider's split of them.
    costs: dict[str, float] = field(default_factory=dict)
    input_tokens: float = 0.0
    output_tokens: float = 0.0
    provider_costs: dict[str, float] = field(default_factory=dict)
    #: Slot of the current reservation, ms on the Redis server's clock.
    slot_ms: float | None = None
    #: Set by the dispatcher: seconds from release until the slot.
    wait_at_release_s: float | None = None
    #: Wall-clock ms at which the last provider call started.
    started_ms: float | None = None
    #: Wall-clock s at which the task was parked (its time parked counts as waited).
    parked_at_s: float | None = None
    #: Set by the dispatcher: the parked entry to claim (``group``, ``entry``) and this
    #: release's ``token``.
    release: dict[str, str] | None = None
    #: Set at queueing when the entry is stored as a ready-made message: its id. The
    #: pass that releases it writes the release into the message's header
    #: (``workers/message.py``); a copy of the message sent any other way (a retry)
    #: no longer has this set and ignores that header.
    awaiting_release: str | None = None
    #: The credential this task runs on, once chosen (a group with several): its
    #: buckets hold the reservation, and its key makes the call.
    credential: str | None = None
    waited_s: float = 0.0
    attempts: int = 0
    rate_limited: int = 0
    overloaded: int = 0
    parks: int = 0
    error_retries: int = 0

    @classmethod
    def new(cls, deadline_s: float, wall: Callable[[], float] = time.time) -> ThrottleState:
        return cls(deadline_at_s=wall() + deadline_s)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ThrottleState:
        known = cls.__dataclass_fields__
        fields = {k: v for k, v in data.items() if k in known}
        if "reservation" not in data and data.get("reservation_id"):
            # A task parked by a version that kept records in Redis: its bare id keeps
            # its slot and lease; settling it finishes nothing (its record expires).
            fields["reservation"] = data["reservation_id"]
        return cls(**fields)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def forget_reservation(self) -> None:
        self.reservation = None
        self.slot_ms = None
        self.costs = {}
        self.provider_costs = {}
        self.wait_at_release_s = None

    def provider_reservation(self) -> Reservation:
        """The provider's split of the current reservation, for its settle."""
        return Reservation(self.provider_costs, self.input_tokens, self.output_tokens)

    def facts(self) -> dict[str, Any]:
        """What a result reports about the throttle."""
        return {
            "waited_s": round(self.waited_s, 4),
            "attempts": self.attempts,
            "rate_limited": self.rate_limited,
            "overloaded": self.overloaded,
            "parks": self.parks,
            "slot_ms": self.slot_ms,
            "started_ms": self.started_ms,
        }


@dataclass(frozen=True)
class Completed:
    result: dict[str, Any]


@dataclass(frozen=True)
class Parked:
    """Park the task until ``slot_ms`` (server clock), ``wait_s`` from now; the message
    can be acknowledged."""

    group: str
    slot_ms: float
    wait_s: float
    state: ThrottleState


@dataclass(frozen=True)
class Queued:
    """The task cannot start within the hold horizon (or work is queued before it):
    it joins its flow in the group's fair queue (:mod:`throttle.scheduler`), which
    releases it when the group's limits can take it. The costs to reserve then are
    in ``state``; ``deadline_ms`` is its throttle deadline on the server's clock."""

    group: LimitGroup
    lane: str
    tenant: str | None
    weight: float
    deadline_ms: float
    wait_s: float
    state: ThrottleState
    #: The status keeps this tenant's share and waits apart (it has its own plan);
    #: others are summed per lane.
    stats_apart: bool = False


@dataclass(frozen=True)
class RetryLater:
    """Send the task again after ``countdown_s`` because of ``error`` (Redis down, a
    transport failure)."""

    countdown_s: float
    error: ThrottleError
    state: ThrottleState


Outcome = Completed | Parked | Queued | RetryLater


#: Where a streamed call's events go as they arrive (workers/relay.py).
EventSink = Callable[[Sequence[SseEvent]], None]


def result_body(
    call: CompletionCall, group: str, response: ProviderResponse, state: ThrottleState
) -> dict[str, Any]:
    """A completed call's result."""
    usage = response.usage
    # The throttle's facts first: monitors such as Flower show the repr of a result cut
    # at 1024 characters (Celery's ``resultrepr_maxsize``), and a response can be long.
    return {
        "throttle": {"group": group, **state.facts()},
        "provider": call.provider,
        "model": call.model,
        "response": dict(response.body),
        "usage": None
        if usage is None
        else {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
    }

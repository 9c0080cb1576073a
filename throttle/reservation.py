"""What the limiter answers: admissions, begins, pauses, settles, and what the
provider said (:class:`Observed`). Plain values; :mod:`throttle.limiter` makes them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class StartWait:
    """When a request would start in a group, as one read tells."""

    #: Until the group's buckets and pause gate would take it, seconds.
    bucket_wait_s: float
    #: Items waiting in the group's fair queue (they go first).
    queued: int
    #: How long the group's limits take to pass one request like it, seconds.
    per_item_s: float

    @property
    def expected_s(self) -> float:
        """The expected wait: the buckets', then the queue draining before it (each
        queued item taken to cost what this one does)."""
        return self.bucket_wait_s + self.queued * self.per_item_s


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer to one admission: a reserved slot, or why there is none."""

    group: str
    #: The reservation handle for :meth:`RedisLimiter.begin`, ``cancel`` and ``settle``:
    #: ``<id>/<token>/<expiry ms>/<record>`` (see :class:`_Handle`). Redis keeps nothing
    #: per reservation until it is finished; the handle carries what finishing it needs.
    reservation: str
    #: False when the slot lay beyond ``max_wait_s``: nothing was reserved.
    reserved: bool
    #: Seconds from the admission until the slot (0 for "go now").
    wait_s: float
    #: The slot, in ms on the Redis server's clock.
    slot_ms: float
    #: The server's clock when the admission was decided, in ms.
    now_ms: float
    #: True when a concurrency lease is held, or the group has no concurrency cap.
    lease: bool
    #: The dimension that set the slot, ``"pause"`` for the pause gate, ``"queue"`` when
    #: a bounded admission found work waiting in the group's fair queue (nothing was
    #: reserved: join the queue), None for "now".
    binding: str | None

    @property
    def reservation_id(self) -> str:
        """The reservation's id (it names its concurrency lease and finished marker)."""
        return reservation_id_of(self.reservation)

    @property
    def needs_begin(self) -> bool:
        """Whether to call :meth:`RedisLimiter.begin` at the slot before starting: a
        future slot must re-check the pause gate, and a lease may still be missing."""
        return self.wait_s > 0 or not self.lease


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """A request's admission, kept for later by the fair scheduler: the group's packed
    spec, the costs as admit.lua reads them, the other dimensions' keys and arguments,
    which bindings are the tenant's own, and the request's dominant share of the group
    (the largest cost / capacity over the group's own dimensions)."""

    spec: bytes
    cost_texts: tuple[str, ...]
    others: str
    tenant_bindings: str
    dominant_share: float


class BeginOutcome(Enum):
    GO = 0
    #: The group is paused: the reservation is void, admit again.
    PAUSED = 1
    #: The concurrency cap is full: try again shortly.
    BUSY = 2
    #: A sliding window has no room for the request yet (it starts later than its
    #: slot, and the log moved on): wait ``wait_s`` and begin again.
    WINDOW_FULL = 3


@dataclass(frozen=True, slots=True)
class Begin:
    """What :meth:`RedisLimiter.begin` found at the slot."""

    outcome: BeginOutcome
    #: For PAUSED: seconds until the gate opens (re-admit: the slot is void).
    wait_s: float
    #: The server's clock at the check; None when it was decided without the clock
    #: (no pause reaches past the slot).
    now_ms: float | None


@dataclass(frozen=True, slots=True)
class Pause:
    """A group's pause gate after :meth:`RedisLimiter.pause`."""

    #: When the gate opens, in ms on the server's clock.
    until_ms: float
    now_ms: float
    #: Whether this call lowered the AIMD multiplier, and its value now.
    decreased: bool = False
    multiplier: float = 1.0

    @property
    def wait_s(self) -> float:
        return max(0.0, self.until_ms - self.now_ms) / 1000


@dataclass(frozen=True, slots=True)
class Settled:
    """A reservation finished by :meth:`RedisLimiter.settle`."""

    now_ms: float
    #: The group's AIMD multiplier after this settle.
    multiplier: float


@dataclass(frozen=True, slots=True)
class Observed:
    """What the provider said about one dimension (None: unknown)."""

    remaining: float | None = None
    limit: float | None = None
    #: Rounding of ``remaining`` (Anthropic tokens: 1000).
    granularity: float = 0.0

    def as_args(self) -> tuple[str, str, str]:
        return (
            repr(-1.0 if self.remaining is None else max(0.0, self.remaining)),
            repr(-1.0 if self.limit is None or self.limit <= 0 else self.limit),
            repr(self.granularity),
        )


#: Nothing heard about a dimension.
UNKNOWN = Observed()


def reservation_id_of(reservation: str) -> str:
    """The id part of a reservation handle (the whole text if it has no record)."""
    return reservation.partition("/")[0]

"""The Redis limiter: atomic multi-dimension admission with reserved start slots.

One :meth:`RedisLimiter.admit` is one Redis round trip. It checks every dimension of a
limit group against the request's costs, on the Redis server's clock, and returns the
start slot it reserved: now, or a later time in arrival order. The caller sleeps until
the slot (or parks the task), calls :meth:`begin` if the slot was in the future, makes
the call, then :meth:`settle`\\s the actual cost. :meth:`cancel` gives a reservation
back; :meth:`pause` closes a group's gate for every worker (after a provider 429).

Redis keeps nothing per reservation while it is open: the admission returns a handle
(:attr:`Admission.reservation`) that carries what settling or cancelling it needs, and
the caller keeps it (a parked task keeps it in its state). Settling or cancelling marks
the reservation finished, so it happens once.

Example::

    limiter = RedisLimiter(redis.Redis())
    group = LimitGroup.from_specs(
        "openai:gpt-4o-mini", {"requests": "500/min", "tokens": "200k/min"}
    )
    admission = limiter.admit(group, {"requests": 1, "tokens": 1200})
    time.sleep(admission.wait_s)
    if admission.needs_begin:
        limiter.begin(group, admission.reservation)  # PAUSED: cancel and admit again
    ...  # the provider call; it used 800 tokens of the 1200 reserved
    limiter.settle(group, admission.reservation, {"tokens": 800 - 1200})
"""

from __future__ import annotations

import math
import os
import struct
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import Any, cast

import redis

from throttle.calendar import window_starts_ms
from throttle.connect import RedisClient, is_cluster
from throttle.errors import CostExceedsCapacityError, ReservationHandleError, StorageError
from throttle.keys import KeyBuilder
from throttle.limits import Algorithm, Dimension, LimitGroup, effective_capacity
from throttle.scripts import Scripts

_ALGORITHM_CODES = {Algorithm.GCRA: "g", Algorithm.SLIDING: "s", Algorithm.CALENDAR: "c"}

#: The scripts count time from here (ms since the Unix epoch; 2023-11-14T22:13:20Z),
#: so times stay below 1e11 ms and keep the microsecond when Redis prints them.
EPOCH_MS = 1_700_000_000_000

#: Groups (one per tenant with a share) whose plans a limiter keeps; past this the
#: oldest is dropped and planned again when it comes back.
PLAN_CACHE_SIZE = 2048


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


_UNKNOWN = Observed()


#: What a caller-chosen reservation id must not contain (the handle's separators).
_ID_FORBIDDEN = frozenset("/|,")
#: The error admit.lua's siblings give a record that does not fit the group (lib/record.lua).
_MALFORMED_RECORD = "malformed reservation record"


def reservation_id_of(reservation: str) -> str:
    """The id part of a reservation handle (the whole text if it has no record)."""
    return reservation.partition("/")[0]


def _group_tag(group: str) -> str:
    """Eight hex digits naming a group inside its reservations' handles."""
    return f"{zlib.crc32(group.encode()):08x}"


@dataclass(frozen=True, slots=True)
class _Handle:
    """A reservation handle taken apart: ``<id>/<token>/<expiry ms>/<record>``. The token
    is the group's tag and eight random hex digits: it names the finished marker, so a
    caller-chosen id can be used again once its reservation is finished."""

    reservation_id: str
    token: str
    expiry_ms: str
    record: str

    @classmethod
    def parse(cls, reservation: str, plan: _Plan) -> _Handle | None:
        """None for a bare id (an admission that reserved nothing: it finishes nothing).
        Anything else that is not a handle of this group is refused before Redis."""
        rid, _, rest = reservation.partition("/")
        if not rest:
            return None
        token, _, rest = rest.partition("/")
        expiry, _, record = rest.partition("/")
        if not (
            rid
            and token.startswith(plan.tag)
            and len(token) == 16
            and expiry.isdigit()
            and record.count("|") == len(plan.order)
        ):
            raise ReservationHandleError(
                f"not a reservation handle of this group: {reservation[:80]!r}"
            )
        return cls(rid, token, expiry, record)


@dataclass(frozen=True)
class _Plan:
    """Per-group values computed once: keys and the static parts of the scripts' ARGV.

    Scripts take GCRA dimensions first, then the others; ``order[k]`` is the group
    index of the k-th dimension in that order.
    """

    #: The group's tag in its reservations' handles (:func:`_group_tag`).
    tag: str
    state_key: str
    leases_key: str
    parked_key: str
    order: tuple[int, ...]
    gcra_count: int
    other_keys: tuple[str, ...]
    #: Per dimension in script order: GCRA (name, period, capacity, tolerance),
    #: others (name, algorithm code, capacity, period).
    admit_args: tuple[tuple[str, str, str, str], ...]
    #: admit.lua's KEYS and ARGV[3], the group's packed spec (see the script's header).
    admit_keys: list[str]
    admit_spec: bytes
    #: admit.lua's ARGV after the costs: four per non-GCRA dimension (calendar
    #: dimensions' window starts are filled in per call, see ``calendar_at``).
    admit_others: tuple[str, ...]
    #: (index into ``admit_others``, group dimension index) of each calendar dimension.
    calendar_at: tuple[tuple[int, int], ...]
    #: Per dimension in script order: GCRA (name, period, capacity, auto), others (name, code).
    undo_args: tuple[tuple[str, ...], ...]
    names: tuple[str, ...]
    usable: tuple[float, ...]
    calendar: frozenset[int]
    #: Per dimension (the group's order): whether it is a tenant's own share.
    tenant: tuple[bool, ...]
    #: Positions among the non-GCRA dimensions (``other_keys``) of the sliding logs.
    sliding: tuple[int, ...] = ()


@contextmanager
def _storage_errors(action: str) -> Iterator[None]:
    try:
        yield
    except redis.ResponseError as exc:
        if _MALFORMED_RECORD in str(exc):
            raise ReservationHandleError(f"{action}: {_MALFORMED_RECORD}") from exc
        raise StorageError(f"redis {action} failed: {exc}") from exc
    except redis.RedisError as exc:
        raise StorageError(f"redis {action} failed: {exc}") from exc


def _cost_text(cost: float) -> str:
    """A cost as the script reads it; whole numbers without a fraction (cheaper to
    send, parse and copy into the reservation record)."""
    if type(cost) is int:
        return str(cost)
    return str(int(cost)) if float(cost).is_integer() else repr(float(cost))


def as_text(value: bytes | str) -> str:
    """A Redis reply as text, whether or not the client decodes responses."""
    return value.decode() if isinstance(value, bytes) else value


def _absolute_ms(epoch_us: int | bytes) -> float:
    """Script times (µs since the llmt epoch) as ms since the Unix epoch."""
    return EPOCH_MS + int(epoch_us) / 1000


class RedisLimiter:
    """Shared limiter state in Redis; safe to use from many threads and processes.

    ``record_ttl_s`` bounds how long after its slot a reservation can still be settled
    or cancelled; past it, the reservation is simply kept (never refunded twice).
    """

    def __init__(
        self,
        client: RedisClient,
        *,
        keys: KeyBuilder | None = None,
        record_ttl_s: float = 900.0,
    ) -> None:
        self.client = client
        self.keys = keys or KeyBuilder()
        self.record_ttl_ms = int(record_ttl_s * 1000)
        self.scripts = Scripts(client)
        self._plans: dict[int, tuple[LimitGroup, _Plan]] = {}
        self._calendar_cache: dict[tuple[float, str], list[int]] = {}

    # -- planning -----------------------------------------------------------------

    def _plan(self, group: LimitGroup) -> _Plan:
        cached = self._plans.get(id(group))
        if cached is not None and cached[0] is group:
            return cached[1]
        dims = group.dimensions
        gcra = [i for i, d in enumerate(dims) if d.algorithm is Algorithm.GCRA]
        other = [i for i, d in enumerate(dims) if d.algorithm is not Algorithm.GCRA]
        order = gcra + other
        admit_args: list[tuple[str, str, str, str]] = []
        undo_args: list[tuple[str, ...]] = []
        for i in gcra:
            period_ms, capacity = repr(dims[i].period_ms), repr(dims[i].capacity)
            tolerance = repr(dims[i].period_ms * (1.0 - group.headroom))
            admit_args.append((dims[i].name, period_ms, capacity, tolerance))
            undo_args.append((dims[i].name, period_ms, capacity, "1" if dims[i].auto else "0"))
        for i in other:
            code = _ALGORITHM_CODES[dims[i].algorithm]
            capacity = repr(dims[i].capacity)
            window = dims[i].period_ms
            if dims[i].algorithm is Algorithm.SLIDING:
                window = group.window_ms(dims[i])
            admit_args.append((dims[i].name, code, capacity, repr(window)))
            undo_args.append((dims[i].name, code))
        fields = ["pause", "m", "x", "b"]
        numbers: list[float] = []
        for i in gcra:
            fields += [f"t:{dims[i].name}", f"k:{dims[i].name}"]
            burst_ms = dims[i].period_ms * (1.0 - group.headroom)
            numbers += [dims[i].period_ms, dims[i].capacity, burst_ms, float(dims[i].auto)]
        body_format = "<" + "s" * len(fields) + "d" * len(numbers)
        header = struct.pack(
            "<5d",
            group.concurrency or 0,
            group.lease_ttl_s * 1000,
            len(gcra),
            len(other),
            group.cold_start,
        )
        # Lua's struct reads an 's' up to a zero byte.
        strings = b"".join(text.encode() + b"\0" for text in [body_format, *fields])
        spec = header + strings + struct.pack(f"<{len(numbers)}d", *numbers)
        admit_others = tuple(arg for k in range(len(gcra), len(order)) for arg in admit_args[k])
        calendar_at = tuple(
            (4 * k + 3, i) for k, i in enumerate(other) if dims[i].algorithm is Algorithm.CALENDAR
        )
        state_key, leases_key = self.keys.state(group.name), self.keys.leases(group.name)
        other_keys = tuple(self.keys.dimension(group.name, dims[i].name) for i in other)
        plan = _Plan(
            tag=_group_tag(group.name),
            state_key=state_key,
            leases_key=leases_key,
            parked_key=self.keys.parked(group.name),
            order=tuple(order),
            gcra_count=len(gcra),
            other_keys=other_keys,
            admit_args=tuple(admit_args),
            admit_keys=[state_key, leases_key, *other_keys],
            admit_spec=spec,
            admit_others=admit_others,
            calendar_at=calendar_at,
            undo_args=tuple(undo_args),
            names=tuple(d.name for d in dims),
            usable=tuple(group.usable_capacity(d) for d in dims),
            calendar=frozenset(i for i in other if dims[i].algorithm is Algorithm.CALENDAR),
            sliding=tuple(k for k, i in enumerate(other) if dims[i].algorithm is Algorithm.SLIDING),
            tenant=tuple(d.name.startswith("tenant.") for d in dims),
        )
        if len(self._plans) >= PLAN_CACHE_SIZE:  # one per tenant: drop the oldest
            self._plans.pop(next(iter(self._plans)), None)
        self._plans[id(group)] = (group, plan)
        return plan

    def _keys(self, group: LimitGroup, plan: _Plan, token: str) -> list[str]:
        marker = self.keys.finished(group.name, token)
        wake = self.keys.wake(group.name)
        return [plan.state_key, marker, plan.leases_key, plan.parked_key, *plan.other_keys, wake]

    def _calendar_starts(self, dim: Dimension) -> str:
        """Window starts around now; recomputed once now nears either end of the list."""
        cache_key = (dim.period_s, dim.timezone or "UTC")
        now_ms = time.time() * 1000
        starts = self._calendar_cache.get(cache_key)
        if starts is None or not starts[2] <= now_ms < starts[-3]:
            starts = window_starts_ms(dim.period_s, dim.timezone or "UTC", now_ms / 1000)
            self._calendar_cache[cache_key] = starts
        return ",".join(str(start - EPOCH_MS) for start in starts)

    def _costs(
        self, group: LimitGroup, costs: Mapping[str, float] | Sequence[float]
    ) -> Sequence[float]:
        if isinstance(costs, Mapping):
            return group.cost_vector(costs)
        if len(costs) != len(group.dimensions):
            raise ValueError(
                f"{group.name}: {len(costs)} costs for {len(group.dimensions)} dimensions"
            )
        return costs

    # -- operations ---------------------------------------------------------------

    def admit(
        self,
        group: LimitGroup,
        costs: Mapping[str, float] | Sequence[float],
        *,
        max_wait_s: float | None = None,
        tenant_max_wait_s: float | None = None,
        reservation_id: str | None = None,
    ) -> Admission:
        """Reserve the earliest slot at which every dimension can take ``costs``.

        ``costs`` maps dimension names to units (missing ones cost 0) or lists them in
        the group's order. With ``max_wait_s``, a slot further away than that is not
        reserved (``reserved`` is False and ``wait_s`` tells how far it was). With
        ``tenant_max_wait_s`` too, neither is a slot that a tenant's own cap sets
        further away than that: reserving it would move the group's schedule to that
        slot for everyone (such a request belongs in the fair queue).

        Raises CostExceedsCapacityError at once for a cost no bucket can ever hold.
        """
        plan = self._plan(group)
        vector, texts = self._cost_texts(group, plan, costs)
        if reservation_id is not None and (
            not reservation_id or not _ID_FORBIDDEN.isdisjoint(reservation_id)
        ):
            raise ReservationHandleError(
                f"a reservation id must be non-empty, without / | or ,: {reservation_id!r}"
            )
        rid = reservation_id or os.urandom(10).hex()
        others = self._admit_others(group, plan)
        bound: float | str = -1 if max_wait_s is None else max_wait_s * 1000
        if max_wait_s is not None and tenant_max_wait_s is not None:
            bound = f"{bound!r}:{tenant_max_wait_s * 1000!r}"
        try:
            reply = self.scripts.run(
                self.scripts.admit,
                plan.admit_keys,
                rid,
                bound,
                plan.admit_spec,
                *texts,
                *others,
            )
        except redis.RedisError as exc:
            raise StorageError(f"redis admission failed: {exc}") from exc
        code_, binding = int(reply[0]), int(reply[5])
        if code_ == 2:
            i = plan.order[binding - 1]
            raise CostExceedsCapacityError(group.name, plan.names[i], vector[i], plan.usable[i])
        if code_ == 3:  # our clock is days away from the server's: rebuild and retry once
            self._calendar_cache.clear()
            return self.admit(
                group,
                vector,
                max_wait_s=max_wait_s,
                tenant_max_wait_s=tenant_max_wait_s,
                reservation_id=rid,
            )
        wait_us = int(reply[1])
        if code_ == 4:  # work waits in the group's fair queue: a bounded caller joins it
            now_ms = _absolute_ms(reply[3])
            return Admission(group.name, rid, False, 0.0, now_ms, now_ms, False, "queue")
        if binding > 0:
            binding_name: str | None = plan.names[plan.order[binding - 1]]
        else:
            binding_name = "pause" if wait_us > 0 else None
        return Admission(
            group.name,
            self._handle(plan, rid, int(reply[2]), reply[6]) if code_ == 0 else rid,
            code_ == 0,
            max(0, wait_us) / 1e6,
            _absolute_ms(reply[2]),
            _absolute_ms(reply[3]),
            bool(int(reply[4])) or not group.concurrency,
            binding_name,
        )

    def _handle(self, plan: _Plan, rid: str, slot_us: int, record: bytes | str) -> str:
        expiry_ms = slot_us // 1000 + self.record_ttl_ms
        return f"{rid}/{plan.tag}{os.urandom(4).hex()}/{expiry_ms}/{as_text(record)}"

    def _cost_texts(
        self, group: LimitGroup, plan: _Plan, costs: Mapping[str, float] | Sequence[float]
    ) -> tuple[Sequence[float], list[str]]:
        vector = self._costs(group, costs)
        usable = plan.usable
        texts = []
        for i in plan.order:
            cost = vector[i]
            if cost > usable[i] + 1e-9:
                raise CostExceedsCapacityError(group.name, plan.names[i], cost, usable[i])
            texts.append(_cost_text(cost))
        return vector, texts

    def _admit_others(self, group: LimitGroup, plan: _Plan) -> Sequence[str]:
        others: Sequence[str] = plan.admit_others
        if plan.calendar_at:
            others = list(others)
            for at, i in plan.calendar_at:
                others[at] = self._calendar_starts(group.dimensions[i])
        return others

    def queue_entry(
        self, group: LimitGroup, costs: Mapping[str, float] | Sequence[float]
    ) -> QueueEntry:
        """What the fair scheduler (``throttle/scheduler.py``) stores to admit a request
        later with exactly :meth:`admit`'s checks. Raises CostExceedsCapacityError at
        once for a cost no bucket can ever hold."""
        plan = self._plan(group)
        vector, texts = self._cost_texts(group, plan, costs)
        others = self._admit_others(group, plan)
        parts: list[str] = []
        for j, key in enumerate(plan.other_keys):
            parts += [key, *others[4 * j : 4 * j + 4]]
        tenant_at = [k + 1 for k, i in enumerate(plan.order) if plan.tenant[i]]
        shares = [
            vector[i] / plan.usable[i]
            for i in plan.order
            if not plan.tenant[i] and plan.usable[i] > 0
        ]
        return QueueEntry(
            spec=plan.admit_spec,
            cost_texts=tuple(texts),
            others="\x1f".join(parts),
            tenant_bindings="," + "".join(f"{k}," for k in tenant_at),
            dominant_share=max(shares, default=0.0),
        )

    def handle_for(self, group: LimitGroup, reservation_id: str, slot_us: int, record: str) -> str:
        """The handle of a reservation the fair scheduler made (as :meth:`admit` returns
        it in :attr:`Admission.reservation`)."""
        return self._handle(self._plan(group), reservation_id, slot_us, record)

    def begin(self, group: LimitGroup, reservation: str) -> Begin:
        """At the slot, as the request is about to leave: check the pause gate, move its
        sliding-log entries to now (the provider counts it from its arrival), take the
        concurrency lease.

        A group with neither sliding logs nor a concurrency cap has only its gate to
        check: one plain read of the pause, not the script. The gate is open from the
        slot on if no pause reaches past it (a pause made after the reservation ends
        later than the reservation was made, and no later than the slot lets it go);
        only otherwise does the script decide on the server's clock."""
        plan = self._plan(group)
        if not plan.sliding and not group.concurrency:
            handle = _Handle.parse(reservation, plan)
            if handle is not None:
                slot_ms = int(handle.expiry_ms) - self.record_ttl_ms  # floor of the slot
                with _storage_errors("HGET"):
                    paused_until = cast(Any, self.client.hget(plan.state_key, "pause"))
                if paused_until is None or float(paused_until) <= slot_ms:
                    return Begin(BeginOutcome.GO, 0.0, None)
        args: list[str | int] = [
            reservation_id_of(reservation),
            group.concurrency or 0,
            int(group.lease_ttl_s * 1000),
        ]
        keys = [plan.state_key, plan.leases_key]
        handle = _Handle.parse(reservation, plan) if plan.sliding else None
        if handle is not None:
            entries = handle.record.split("|")[1 + plan.gcra_count :]
            for k in plan.sliding:
                cost, _, member = entries[k].partition(",")
                if member:
                    name, _code, capacity, window_ms = plan.admit_args[plan.gcra_count + k]
                    keys.append(plan.other_keys[k])
                    args += [name, member, cost, capacity, window_ms]
        with _storage_errors("begin"):
            code, wait_us, now_us = self.scripts.begin(keys=keys, args=args)
        return Begin(BeginOutcome(int(code)), int(wait_us) / 1e6, _absolute_ms(now_us))

    def cancel(self, group: LimitGroup, reservation: str) -> float | None:
        """Give a reservation back (its handle, :attr:`Admission.reservation`). Returns
        the server time (ms) it was done at, or None if the reservation was already
        settled, cancelled or expired."""
        plan = self._plan(group)
        handle = _Handle.parse(reservation, plan)
        if handle is None:
            return None
        args: list[str | int] = [
            handle.reservation_id,
            plan.gcra_count,
            len(plan.order) - plan.gcra_count,
        ]
        for undo in plan.undo_args:
            args += undo
        args += [handle.expiry_ms, handle.record]
        with _storage_errors("cancel"):
            done, now_us = self.scripts.cancel(
                keys=self._keys(group, plan, handle.token), args=args
            )
        return _absolute_ms(now_us) if int(done) else None

    def settle(
        self,
        group: LimitGroup,
        reservation: str,
        deltas: Mapping[str, float] | None = None,
        observed: Mapping[str, Observed] | None = None,
    ) -> Settled | None:
        """Finish a reservation (its handle, :attr:`Admission.reservation`): adjust each
        dimension by ``actual - reserved``, apply what the provider's headers said
        (``observed``, by dimension name), raise the AIMD multiplier after a clean window,
        and release the concurrency lease. A positive delta may put a bucket into debt.
        Returns None if the reservation was already settled, cancelled or expired
        (nothing changes then)."""
        plan = self._plan(group)
        handle = _Handle.parse(reservation, plan)
        if handle is None:
            return None
        vector = [0.0] * len(plan.names)
        for name, delta in (deltas or {}).items():
            vector[group.index(name)] = float(delta)
        observed = observed or {}
        args: list[str | float | int] = [
            handle.reservation_id,
            plan.gcra_count,
            len(plan.order) - plan.gcra_count,
            repr(group.aimd.increase),
            int(group.clean_window_s * 1000),
            repr(group.multiplier_ceiling),
        ]
        for k, i in enumerate(plan.order):
            if k < plan.gcra_count:
                seen = observed.get(plan.names[i], _UNKNOWN)
                tolerance = plan.admit_args[k][3]
                args += [*plan.undo_args[k], repr(vector[i]), *seen.as_args(), tolerance]
            else:
                args += [*plan.undo_args[k], repr(vector[i])]
        args += [handle.expiry_ms, handle.record]
        with _storage_errors("settle"):
            done, now_us, multiplier_e6 = self.scripts.settle(
                keys=self._keys(group, plan, handle.token), args=args
            )
        if not int(done):
            return None
        return Settled(_absolute_ms(now_us), int(multiplier_e6) / 1e6)

    def pause(self, group: LimitGroup, duration_s: float, *, rate_limited: bool = False) -> Pause:
        """Close the group's gate for ``duration_s`` from the server's now, for every
        worker. Never shortens a longer pause already in force.

        ``rate_limited``: the pause answers a provider 429. The group's AIMD multiplier
        then decreases once per epoch (the 429s until this pause is over and one clean
        window has passed count once), and the queue of reservations, parked tasks
        included, stretches to the lower rate."""
        epoch_ms = int(group.clean_window_s * 1000) if rate_limited else -1
        args: list[str | int] = [
            max(0, int(duration_s * 1000)),
            epoch_ms,
            repr(group.aimd.decrease),
            repr(group.aimd.floor),
        ]
        plan = self._plan(group)
        for k in range(plan.gcra_count):
            args += [plan.admit_args[k][0], plan.admit_args[k][3]]
        with _storage_errors("pause"):
            _extended, until_us, now_us, decreased, multiplier_e6 = self.scripts.pause(
                keys=[plan.state_key, plan.parked_key], args=args
            )
        return Pause(
            _absolute_ms(until_us), _absolute_ms(now_us), bool(decreased), int(multiplier_e6) / 1e6
        )

    def server_time_ms(self) -> float:
        """The Redis server's clock, in ms."""
        with _storage_errors("TIME"):
            seconds, micros = cast(tuple[int, int], self.client.time())
        return int(seconds) * 1000 + int(micros) / 1000

    def start_wait_s(self, group: LimitGroup, costs: Mapping[str, float]) -> tuple[float, int]:
        """How long a request of ``costs`` would wait to start in ``group`` if admitted
        now (its GCRA buckets and the pause gate; infinite while work waits in its fair
        queue), and how many items wait there. One read (two on a Redis Cluster, which
        pipelines no TIME: the clock is then read from the node owning the group's
        slot); to choose among groups (the credentials of one)."""
        key, fields = self.start_wait_read(group)
        with _storage_errors("HMGET"):
            server_time: Any
            values: Any
            if is_cluster(self.client):
                cluster: Any = self.client  # redis-py leaves these calls untyped
                node = cluster.get_node_from_key(key)
                server_time = cluster.execute_command("TIME", target_nodes=node)
                values = cluster.hmget(key, fields)
            else:
                pipe = self.client.pipeline(transaction=False)
                pipe.time()
                pipe.hmget(key, fields)
                server_time, values = pipe.execute()
        start = self.start_wait_from(group, costs, server_time, values)
        return (math.inf if start.queued > 0 else start.bucket_wait_s), start.queued

    def start_wait_read(self, group: LimitGroup) -> tuple[str, list[str]]:
        """What :meth:`start_wait_from` reads: ``TIME`` and ``HMGET key *fields`` (for
        callers with their own, asyncio, client: the gateway)."""
        plan = self._plan(group)
        dims = group.dimensions
        fields = ["pause", "m", "b"]
        for i in plan.order[: plan.gcra_count]:
            fields += [f"t:{dims[i].name}", f"k:{dims[i].name}"]
        return plan.state_key, fields

    def start_wait_from(
        self,
        group: LimitGroup,
        costs: Mapping[str, float],
        server_time: Sequence[Any],
        values: Sequence[Any],
    ) -> StartWait:
        """The start of a request of ``costs`` from the read of :meth:`start_wait_read`
        (``server_time``: TIME's reply, ``values``: HMGET's)."""
        plan = self._plan(group)
        dims = group.dimensions
        seconds, micros = server_time
        now = (int(seconds) * 1000 + int(micros) / 1000) - EPOCH_MS
        raw = [None if v is None else float(v) for v in values]
        multiplier = raw[1] or 1.0
        slot = max(now, raw[0] or 0.0)
        per_item_ms = 0.0
        for k, i in enumerate(plan.order[: plan.gcra_count]):
            dim = dims[i]
            tat_us, learned = raw[3 + 2 * k], raw[4 + 2 * k]
            tolerance = dim.period_ms * (1.0 - group.headroom)
            emission = dim.period_ms / effective_capacity(dim, learned, multiplier)
            tat = now + tolerance * (1 - group.cold_start) if tat_us is None else tat_us / 1000
            cost = float(costs.get(dim.name, 0.0))
            slot = max(slot, tat + min(cost * emission, tolerance) - tolerance)
            per_item_ms = max(per_item_ms, cost * emission)
        return StartWait((slot - now) / 1000, int(raw[2] or 0), per_item_ms / 1000)

    def queued_work(self, group: str) -> int:
        """Items waiting in ready flows of ``group``'s fair queue (the state's ``b``,
        kept by ``schedule.lua``): while above 0, new work joins the queue."""
        with _storage_errors("HGET"):
            value = self.client.hget(self.keys.state(group), "b")
        return int(cast(Any, value) or 0)

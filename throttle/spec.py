"""What the scripts receive: a limit group's plan, computed once per group, and the
encoding of everything that crosses the wire.

A :class:`Plan` holds a group's keys and the static parts of every script's ARGV, the
group's packed spec first (admit.lua's ARGV[3], decoded by its header). A reservation
handle (:class:`Handle`) is the text a caller keeps between admitting and finishing.
State hash field names come from :mod:`throttle.fields`.
"""

from __future__ import annotations

import struct
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from throttle import fields
from throttle.calendar import window_starts_ms
from throttle.errors import CostExceedsCapacityError, ReservationHandleError
from throttle.keys import KeyBuilder
from throttle.limits import Algorithm, Dimension, LimitGroup
from throttle.reservation import UNKNOWN, Observed, QueueEntry

_ALGORITHM_CODES = {Algorithm.GCRA: "g", Algorithm.SLIDING: "s", Algorithm.CALENDAR: "c"}

#: The scripts count time from here (ms since the Unix epoch; 2023-11-14T22:13:20Z),
#: so times stay below 1e11 ms and keep the microsecond when Redis prints them.
EPOCH_MS = 1_700_000_000_000

#: What a caller-chosen reservation id must not contain (the handle's separators).
ID_FORBIDDEN = frozenset("/|,")
#: The error admit.lua's siblings give a record that does not fit the group (lib/record.lua).
MALFORMED_RECORD = "malformed reservation record"


def group_tag(group: str) -> str:
    """Eight hex digits naming a group inside its reservations' handles."""
    return f"{zlib.crc32(group.encode()):08x}"


@dataclass(frozen=True, slots=True)
class Handle:
    """A reservation handle taken apart: ``<id>/<token>/<expiry ms>/<record>``. The token
    is the group's tag and eight random hex digits: it names the finished marker, so a
    caller-chosen id can be used again once its reservation is finished."""

    reservation_id: str
    token: str
    expiry_ms: str
    record: str

    @classmethod
    def parse(cls, reservation: str, plan: Plan) -> Handle | None:
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
class Plan:
    """Per-group values computed once: keys and the static parts of the scripts' ARGV.

    Scripts take GCRA dimensions first, then the others; ``order[k]`` is the group
    index of the k-th dimension in that order.
    """

    #: The group's tag in its reservations' handles (:func:`group_tag`).
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
    #: admit.lua's KEYS.
    admit_keys: list[str]
    #: The group's packed spec (:func:`packed_spec`), every script's one encoding of it.
    spec: bytes
    #: admit.lua's ARGV after the costs: four per non-GCRA dimension (calendar
    #: dimensions' window starts are filled in per call, see ``calendar_at``).
    admit_others: tuple[str, ...]
    #: (index into ``admit_others``, group dimension index) of each calendar dimension.
    calendar_at: tuple[tuple[int, int], ...]
    names: tuple[str, ...]
    usable: tuple[float, ...]
    calendar: frozenset[int]
    #: Per dimension (the group's order): whether it is a tenant's own share.
    tenant: tuple[bool, ...]
    #: Positions among the non-GCRA dimensions (``other_keys``) of the sliding logs.
    sliding: tuple[int, ...] = ()


def plan_group(group: LimitGroup, keys: KeyBuilder) -> Plan:
    """The plan of ``group``: GCRA dimensions first, then the others."""
    dims = group.dimensions
    gcra = [i for i, d in enumerate(dims) if d.algorithm is Algorithm.GCRA]
    other = [i for i, d in enumerate(dims) if d.algorithm is not Algorithm.GCRA]
    order = gcra + other
    admit_args: list[tuple[str, str, str, str]] = []
    for i in gcra:
        period_ms, capacity = repr(dims[i].period_ms), repr(dims[i].capacity)
        tolerance = repr(dims[i].period_ms * (1.0 - group.headroom))
        admit_args.append((dims[i].name, period_ms, capacity, tolerance))
    for i in other:
        code = _ALGORITHM_CODES[dims[i].algorithm]
        capacity = repr(dims[i].capacity)
        window = dims[i].period_ms
        if dims[i].algorithm is Algorithm.SLIDING:
            window = group.window_ms(dims[i])
        admit_args.append((dims[i].name, code, capacity, repr(window)))
    admit_others = tuple(arg for k in range(len(gcra), len(order)) for arg in admit_args[k])
    calendar_at = tuple(
        (4 * k + 3, i) for k, i in enumerate(other) if dims[i].algorithm is Algorithm.CALENDAR
    )
    state_key, leases_key = keys.state(group.name), keys.leases(group.name)
    other_keys = tuple(keys.dimension(group.name, dims[i].name) for i in other)
    return Plan(
        tag=group_tag(group.name),
        state_key=state_key,
        leases_key=leases_key,
        parked_key=keys.parked(group.name),
        order=tuple(order),
        gcra_count=len(gcra),
        other_keys=other_keys,
        admit_args=tuple(admit_args),
        admit_keys=[state_key, leases_key, *other_keys],
        spec=packed_spec(group, gcra, other),
        admit_others=admit_others,
        calendar_at=calendar_at,
        names=tuple(d.name for d in dims),
        usable=tuple(group.usable_capacity(d) for d in dims),
        calendar=frozenset(i for i in other if dims[i].algorithm is Algorithm.CALENDAR),
        sliding=tuple(k for k, i in enumerate(other) if dims[i].algorithm is Algorithm.SLIDING),
        tenant=tuple(d.name.startswith("tenant.") for d in dims),
    )


def packed_spec(group: LimitGroup, gcra: list[int], other: list[int]) -> bytes:
    """The group's spec, the same bytes for every script that takes one (admit.lua,
    settle.lua, cancel.lua, pause.lua, and schedule.lua's flows), decoded by
    ``lua/lib/spec.lua``: a struct, far cheaper for a script to decode than numbers as
    text. Five doubles (concurrency cap, lease ttl ms, g the number of GCRA dimensions,
    o the number of others, cold start); what an admission reads: its struct format,
    the state fields (``pause m x b``, then ``t:<dim> k:<dim>`` per GCRA dimension),
    four doubles per GCRA dimension (period ms, configured capacity, burst tolerance
    ms, auto 1/0); then what only settling, cancelling and pausing read: its struct
    format, five doubles for the group's AIMD (increase, clean window ms, ceiling,
    decrease, floor), a name and an algorithm code per other dimension."""
    dims = group.dimensions
    names = [fields.PAUSE, fields.MULTIPLIER, fields.EXPIRY, fields.QUEUED]
    numbers: list[float] = []
    for i in gcra:
        names += [fields.TAT + dims[i].name, fields.LEARNED + dims[i].name]
        burst_ms = dims[i].period_ms * (1.0 - group.headroom)
        numbers += [dims[i].period_ms, dims[i].capacity, burst_ms, float(dims[i].auto)]
    header = struct.pack(
        "<5d",
        group.concurrency or 0,
        group.lease_ttl_s * 1000,
        len(gcra),
        len(other),
        group.cold_start,
    )
    admission_format = "<" + "s" * len(names) + "d" * len(numbers)
    admission = strings([admission_format, *names]) + struct.pack(f"<{len(numbers)}d", *numbers)
    aimd = group.aimd
    clean_window_ms = float(int(group.clean_window_s * 1000))
    group_numbers = [aimd.increase, clean_window_ms, group.multiplier_ceiling, aimd.decrease]
    group_numbers.append(aimd.floor)
    others = [text for i in other for text in (dims[i].name, _ALGORITHM_CODES[dims[i].algorithm])]
    rest_format = "<" + "d" * 5 + "s" * len(others)  # (Lua's struct takes no counts)
    rest = strings([rest_format]) + struct.pack("<5d", *group_numbers) + strings(others)
    return header + admission + rest


def strings(texts: list[str]) -> bytes:
    """Texts as Lua's struct reads an 's': up to a zero byte."""
    return b"".join(text.encode() + b"\0" for text in texts)


def cost_texts(
    group: LimitGroup, plan: Plan, costs: Mapping[str, float] | Sequence[float]
) -> tuple[Sequence[float], list[str]]:
    """The costs in the group's order, and as admit.lua reads them (GCRA dimensions
    first). Raises CostExceedsCapacityError for a cost no bucket can ever hold."""
    if isinstance(costs, Mapping):
        vector: Sequence[float] = group.cost_vector(costs)
    elif len(costs) != len(group.dimensions):
        raise ValueError(f"{group.name}: {len(costs)} costs for {len(group.dimensions)} dimensions")
    else:
        vector = costs
    usable = plan.usable
    texts = []
    for i in plan.order:
        cost = vector[i]
        if cost > usable[i] + 1e-9:
            raise CostExceedsCapacityError(group.name, plan.names[i], cost, usable[i])
        texts.append(cost_text(cost))
    return vector, texts


class CalendarStarts:
    """Calendar dimensions' window starts around now (admit.lua's per-call part of
    their arguments), each list recomputed once now nears either of its ends."""

    def __init__(self) -> None:
        self._cache: dict[tuple[float, str], list[int]] = {}

    def clear(self) -> None:
        self._cache.clear()

    def starts(self, dim: Dimension) -> str:
        cache_key = (dim.period_s, dim.timezone or "UTC")
        now_ms = time.time() * 1000
        starts = self._cache.get(cache_key)
        if starts is None or not starts[2] <= now_ms < starts[-3]:
            starts = window_starts_ms(dim.period_s, dim.timezone or "UTC", now_ms / 1000)
            self._cache[cache_key] = starts
        return ",".join(str(start - EPOCH_MS) for start in starts)

    def others(self, group: LimitGroup, plan: Plan) -> Sequence[str]:
        """admit.lua's ARGV after the costs: four per non-GCRA dimension."""
        others: Sequence[str] = plan.admit_others
        if plan.calendar_at:
            others = list(others)
            for at, i in plan.calendar_at:
                others[at] = self.starts(group.dimensions[i])
        return others


def queue_entry(
    plan: Plan, vector: Sequence[float], texts: list[str], others: Sequence[str]
) -> QueueEntry:
    """What the fair scheduler stores to admit a request later (schedule.lua's push)."""
    parts: list[str] = []
    for j, key in enumerate(plan.other_keys):
        parts += [key, *others[4 * j : 4 * j + 4]]
    tenant_at = [k + 1 for k, i in enumerate(plan.order) if plan.tenant[i]]
    shares = [
        vector[i] / plan.usable[i] for i in plan.order if not plan.tenant[i] and plan.usable[i] > 0
    ]
    return QueueEntry(
        spec=plan.spec,
        cost_texts=tuple(texts),
        others="\x1f".join(parts),
        tenant_bindings="," + "".join(f"{k}," for k in tenant_at),
        dominant_share=max(shares, default=0.0),
    )


def cost_text(cost: float) -> str:
    """A cost as the script reads it; whole numbers without a fraction (cheaper to
    send, parse and copy into the reservation record)."""
    if type(cost) is int:
        return str(cost)
    return str(int(cost)) if float(cost).is_integer() else repr(float(cost))


def as_text(value: bytes | str) -> str:
    """A Redis reply as text, whether or not the client decodes responses."""
    return value.decode() if isinstance(value, bytes) else value


def absolute_ms(epoch_us: int | bytes) -> float:
    """Script times (µs since the llmt epoch) as ms since the Unix epoch."""
    return EPOCH_MS + int(epoch_us) / 1000


# -- each script's arguments (see its header) ---------------------------------------


def begin_keys_args(
    group: LimitGroup, plan: Plan, reservation: str
) -> tuple[list[str], list[str | int]]:
    """begin.lua's KEYS and ARGV: five per sliding-log entry the reservation made."""
    args: list[str | int] = [
        reservation.partition("/")[0],
        group.concurrency or 0,
        int(group.lease_ttl_s * 1000),
    ]
    keys = [plan.state_key, plan.leases_key]
    handle = Handle.parse(reservation, plan) if plan.sliding else None
    if handle is not None:
        entries = handle.record.split("|")[1 + plan.gcra_count :]
        for k in plan.sliding:
            cost, _, member = entries[k].partition(",")
            if member:
                name, _code, capacity, window_ms = plan.admit_args[plan.gcra_count + k]
                keys.append(plan.other_keys[k])
                args += [name, member, cost, capacity, window_ms]
    return keys, args


def cancel_args(plan: Plan, handle: Handle) -> list[str | bytes]:
    """cancel.lua's ARGV."""
    return [handle.reservation_id, plan.spec, handle.expiry_ms, handle.record]


def settle_args(
    group: LimitGroup,
    plan: Plan,
    handle: Handle,
    deltas: Mapping[str, float],
    observed: Mapping[str, Observed],
) -> list[str | bytes]:
    """settle.lua's ARGV."""
    vector = [0.0] * len(plan.names)
    for name, delta in deltas.items():
        vector[group.index(name)] = float(delta)
    args: list[str | bytes] = [handle.reservation_id, plan.spec]
    for k, i in enumerate(plan.order):
        args.append(repr(vector[i]))
        if k < plan.gcra_count:
            args += observed.get(plan.names[i], UNKNOWN).as_args()
    return [*args, handle.expiry_ms, handle.record]


def pause_args(plan: Plan, duration_s: float, rate_limited: bool) -> list[str | int | bytes]:
    """pause.lua's ARGV."""
    return [max(0, int(duration_s * 1000)), 1 if rate_limited else 0, plan.spec]

"""A pure-Python reference model of the limiter's algorithms, with an injectable clock.

It implements exactly what the Lua scripts do (``throttle/lua``), in memory and without
locks, so unit tests can check the algorithms without Redis and property tests can
drive the model and the Redis limiter with the same operations and compare them.
Times are milliseconds; ``now_ms`` is passed to every operation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from throttle.calendar import window_starts_ms
from throttle.errors import CostExceedsCapacityError
from throttle.limits import (
    Algorithm,
    LimitGroup,
    effective_capacity,
    raised_multiplier,
    sliding_capacity,
)

_MAX_ROUNDS = 32


def _ms(x: float) -> float:
    """Values are stored to the microsecond, as the Lua scripts store them."""
    return round(x, 3)


def _stored_tat(x: float) -> float:
    """GCRA TATs are stored in whole µs rounded up (``tat_text`` in lib/common.lua)."""
    return math.ceil(x * 1000 - 0.001) / 1000


def check_capacity(group: LimitGroup, vector: Sequence[float]) -> None:
    """CostExceedsCapacityError for a cost no bucket of ``group`` can ever hold."""
    for dim, cost in zip(group.dimensions, vector, strict=True):
        if cost > group.usable_capacity(dim) + 1e-9:
            raise CostExceedsCapacityError(group.name, dim.name, cost, group.usable_capacity(dim))


@dataclass
class _Entry:
    algorithm: Algorithm
    cost: float
    post: float | None = None
    emission_ms: float = 0.0
    where: str | float | None = None  # calendar window start, or sliding entry id


@dataclass
class _Record:
    slot_ms: float
    entries: list[_Entry]
    expires_ms: float


@dataclass
class _GroupState:
    tat: dict[str, float] = field(default_factory=dict)
    log: dict[str, list[tuple[float, str, float]]] = field(default_factory=dict)
    windows: dict[str, dict[int, float]] = field(default_factory=dict)
    pause_ms: float = 0.0
    multiplier: float = 1.0
    epoch_end_ms: float = float("-inf")
    last_decrease_ms: float | None = None
    last_increase_ms: float | None = None
    learned: dict[str, float] = field(default_factory=dict)
    leases: dict[str, float] = field(default_factory=dict)
    records: dict[str, _Record] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelAdmission:
    reserved: bool
    wait_ms: float
    slot_ms: float
    lease: bool
    binding: str | None
    #: Nothing reserved: the slot is within ``lease_ahead_ms`` but every concurrency
    #: lease is held (the fair scheduler releases an item only with its lease).
    lease_cap: bool = False


class LimiterModel:
    """The limiter's algorithms over in-memory state.

    ``clock`` returns the current time in ms; operations also accept ``now_ms``
    explicitly so a test can replay the server's clock.
    """

    def __init__(self, clock: Callable[[], float] | None = None, record_ttl_ms: float = 3.6e6):
        self.clock = clock or (lambda: 0.0)
        self.record_ttl_ms = record_ttl_ms
        self.groups: dict[str, _GroupState] = {}

    def _state(self, group: LimitGroup) -> _GroupState:
        return self.groups.setdefault(group.name, _GroupState())

    # -- admission ----------------------------------------------------------------

    def admit(
        self,
        group: LimitGroup,
        costs: Mapping[str, float] | Sequence[float],
        reservation_id: str,
        *,
        now_ms: float | None = None,
        max_wait_ms: float | None = None,
        lease_ahead_ms: float | None = None,
    ) -> ModelAdmission:
        """``lease_ahead_ms`` (the fair scheduler's admission): a slot at most this far
        away takes its concurrency lease now, or nothing is reserved; a refused request
        keeps the cold start of a bucket it found without state."""
        now = self.clock() if now_ms is None else now_ms
        vector = group.cost_vector(costs) if isinstance(costs, Mapping) else list(costs)
        st = self._state(group)
        check_capacity(group, vector)
        for dim in group.dimensions:
            if dim.algorithm is Algorithm.SLIDING:
                log = st.log.setdefault(dim.name, [])
                log[:] = [e for e in log if e[0] > now - group.window_ms(dim)]

        slot, binding, settled = max(now, st.pause_ms), 0, False
        for _ in range(_MAX_ROUNDS):
            settled = True
            for i, (dim, cost) in enumerate(zip(group.dimensions, vector, strict=True), 1):
                earliest = self._earliest(group, st, i - 1, cost, slot, now)
                if earliest is None:
                    return ModelAdmission(False, -1, 0, False, dim.name)
                if earliest > slot:
                    slot, binding, settled = earliest, i, False
            if settled:
                break
        wait = slot - now
        name = group.dimensions[binding - 1].name if binding else ("pause" if wait > 0 else None)
        if not settled or (max_wait_ms is not None and wait > max_wait_ms):
            if lease_ahead_ms is not None:  # a cold bucket's start is kept
                for dim in group.dimensions:
                    if dim.algorithm is Algorithm.GCRA and dim.name not in st.tat:
                        st.tat[dim.name] = _stored_tat(self._tat(st, group, dim.name, now))
            return ModelAdmission(False, wait, slot, False, name)

        lease = False
        ahead = wait <= 0 or (lease_ahead_ms is not None and wait <= lease_ahead_ms)
        if group.concurrency and ahead:
            st.leases = {k: v for k, v in st.leases.items() if v > now}
            if len(st.leases) < group.concurrency:
                lease = True
            elif lease_ahead_ms is not None:
                return ModelAdmission(False, wait, slot, False, name, lease_cap=True)
        entries = [
            self._commit(group, st, i, cost, slot, reservation_id, now)
            for i, cost in enumerate(vector)
        ]
        if lease:
            st.leases[reservation_id] = now + group.lease_ttl_s * 1000
        st.records[reservation_id] = _Record(slot, entries, slot + self.record_ttl_ms)
        return ModelAdmission(True, wait, slot, lease or not group.concurrency, name)

    def _earliest(
        self, group: LimitGroup, st: _GroupState, i: int, cost: float, s: float, now: float
    ) -> float | None:
        dim = group.dimensions[i]
        if dim.algorithm is Algorithm.GCRA:
            emission = self._emission_ms(st, group, i)
            tolerance = dim.period_ms * (1.0 - group.headroom)
            reach = min(cost * emission, tolerance)
            return max(s, self._tat(st, group, dim.name, now) + reach - tolerance)
        if dim.algorithm is Algorithm.SLIDING:
            log = st.log.get(dim.name, [])
            start = max(s, log[-1][0] if log else 0.0)
            excess = sum(e[2] for e in log) + cost - sliding_capacity(dim, st.multiplier)
            for score, _rid, entry_cost in log:
                if excess <= 0:
                    break
                excess -= entry_cost
                if excess <= 0:
                    return max(start, score + group.window_ms(dim))
            return start
        capacity = group.usable_capacity(dim)
        starts = window_starts_ms(dim.period_s, dim.timezone or "UTC", now / 1000)
        used = st.windows.get(dim.name, {})
        for k in range(len(starts) - 1):
            if starts[k + 1] <= s:
                continue
            if used.get(starts[k], 0.0) + cost <= capacity:
                return max(s, starts[k])
        return None

    @staticmethod
    def _tat(st: _GroupState, group: LimitGroup, name: str, now: float) -> float:
        """A dimension's TAT; a group without state starts ``cold_start`` full."""
        if name not in st.tat:
            dim = group.dimensions[group.index(name)]
            return now + dim.period_ms * (1.0 - group.headroom) * (1.0 - group.cold_start)
        return st.tat[name]

    @staticmethod
    def _effective_capacity(
        st: _GroupState, group: LimitGroup, i: int, multiplier: float | None = None
    ) -> float:
        dim = group.dimensions[i]
        m = st.multiplier if multiplier is None else multiplier
        return effective_capacity(dim, st.learned.get(dim.name), m)

    @staticmethod
    def _multiplier_ceiling(st: _GroupState, group: LimitGroup) -> float:
        """An auto group's multiplier grows beyond 1 only while some auto dimension has
        not heard its limit."""
        unheard = [d for d in group.dimensions if d.auto and d.name not in st.learned]
        return group.multiplier_ceiling if unheard else 1.0

    def _emission_ms(self, st: _GroupState, group: LimitGroup, i: int) -> float:
        return group.dimensions[i].period_ms / self._effective_capacity(st, group, i)

    def _commit(
        self,
        group: LimitGroup,
        st: _GroupState,
        i: int,
        cost: float,
        slot: float,
        rid: str,
        now: float,
    ) -> _Entry:
        dim = group.dimensions[i]
        entry = _Entry(dim.algorithm, cost)
        if dim.algorithm is Algorithm.GCRA:  # settle charges a cost-0 entry at this rate
            entry.emission_ms = self._emission_ms(st, group, i)
        if cost == 0:
            return entry
        if dim.algorithm is Algorithm.GCRA:
            emission = self._emission_ms(st, group, i)
            post = _stored_tat(max(self._tat(st, group, dim.name, now), slot) + cost * emission)
            st.tat[dim.name] = post
            entry.post, entry.emission_ms = post, emission
        elif dim.algorithm is Algorithm.SLIDING:
            st.log.setdefault(dim.name, []).append((_ms(slot), rid, cost))
            entry.where = rid
        else:
            starts = window_starts_ms(dim.period_s, dim.timezone or "UTC", slot / 1000)
            start = max(x for x in starts if x <= slot)
            windows = st.windows.setdefault(dim.name, {})
            for old in [w for w in windows if w < start]:
                del windows[old]
            windows[start] = windows.get(start, 0.0) + cost
            entry.where = start
        return entry

    # -- after admission ----------------------------------------------------------

    def _take_record(self, group: LimitGroup, rid: str, now: float) -> _Record | None:
        record = self._state(group).records.pop(rid, None)
        if record is None or record.expires_ms <= now:
            return None
        return record

    def cancel(
        self,
        group: LimitGroup,
        reservation_id: str,
        *,
        now_ms: float | None = None,
    ) -> bool:
        now = self.clock() if now_ms is None else now_ms
        st = self._state(group)
        record = self._take_record(group, reservation_id, now)
        if record is None:
            return False
        for dim, entry in zip(group.dimensions, record.entries, strict=True):
            if entry.cost == 0:
                continue
            if entry.algorithm is Algorithm.GCRA:
                tat = st.tat.get(dim.name, 0.0)
                if entry.post is not None and tat == entry.post:  # untouched: undo exactly
                    st.tat[dim.name] = _stored_tat(tat - entry.cost * entry.emission_ms)
                else:  # at today's rate: a change since rescaled the queue to it
                    refund = entry.cost * self._emission_ms(st, group, group.index(dim.name))
                    st.tat[dim.name] = _stored_tat(max(now, tat - refund))
            elif entry.algorithm is Algorithm.SLIDING:
                log = st.log.get(dim.name, [])
                log[:] = [e for e in log if e[1] != entry.where]
            else:
                windows = st.windows.get(dim.name, {})
                if isinstance(entry.where, int) and entry.where in windows:
                    windows[entry.where] -= entry.cost
        st.leases.pop(reservation_id, None)
        return True

    def settle(
        self,
        group: LimitGroup,
        reservation_id: str,
        deltas: Mapping[str, float],
        *,
        observed: Mapping[str, tuple[float | None, float | None, float]] | None = None,
        now_ms: float | None = None,
    ) -> bool:
        """``observed``: dimension -> (remaining, limit, granularity), as the headers said."""
        now = self.clock() if now_ms is None else now_ms
        st = self._state(group)
        record = self._take_record(group, reservation_id, now)
        if record is None:
            return False
        observed = observed or {}
        # The queue reaches as far as its binding bucket's TAT beyond its tolerance.
        reach, reach_after, binding_changed, changed = 0.0, 0.0, False, set()
        for i, (dim, entry) in enumerate(zip(group.dimensions, record.entries, strict=True)):
            delta = float(deltas.get(dim.name, 0.0))
            if entry.algorithm is Algorithm.GCRA:
                remaining, limit, granularity = observed.get(dim.name, (None, None, 0.0))
                before = self._effective_capacity(st, group, i)
                if limit is not None and limit > 0:
                    st.learned[dim.name] = limit
                now_capacity = self._effective_capacity(st, group, i)
                tat = after = st.tat.get(dim.name, 0.0)
                tolerance = dim.period_ms * (1.0 - group.headroom)
                queued = max(0.0, tat - now - tolerance)
                if now_capacity != before:  # the provider's limit changed
                    after = self._rescaled(tat, now, tolerance, before / now_capacity)
                    reach_after = max(reach_after, after - now - tolerance)
                    changed.add(dim.name)
                if queued > reach:
                    reach, binding_changed = queued, dim.name in changed
                emission = self._emission_ms(st, group, i)
                if delta != 0:
                    after = max(after, now) + delta * emission  # today's rate
                    after = max(after, now) if delta < 0 else after
                if remaining is not None:
                    capacity = self._effective_capacity(st, group, i)
                    ceiling = max(0.0, remaining) + max(0.0, granularity) / 2
                    if capacity - (after - now) / emission > ceiling:
                        after = now + (capacity - ceiling) * emission
                if after != tat:  # an untouched bucket without state stays without
                    st.tat[dim.name] = _stored_tat(after)
            elif delta == 0 or entry.cost == 0:
                continue
            elif entry.algorithm is Algorithm.SLIDING:
                log = st.log.get(dim.name, [])
                for k, (score, rid, cost) in enumerate(log):
                    if rid == entry.where:
                        log[k] = (score, rid, max(0.0, cost + delta))
            else:
                windows = st.windows.get(dim.name, {})
                if isinstance(entry.where, int) and entry.where in windows:
                    windows[entry.where] += max(delta, -entry.cost)
        if not binding_changed:  # a bucket that did not bind changed: nothing moves
            reach_after = max(reach_after, reach)
        queue_factor = max(0.0, reach_after) / reach if reach > 0 else 1.0
        if queue_factor < 1:  # the queue moved earlier: so do the TATs it pushed along
            for dim in group.dimensions:
                tat_or_none = st.tat.get(dim.name)
                if dim.algorithm is not Algorithm.GCRA or dim.name in changed:
                    continue
                if tat_or_none is not None and tat_or_none > now:
                    tolerance = dim.period_ms * (1.0 - group.headroom)
                    rescaled = self._rescaled(tat_or_none, now, tolerance, queue_factor)
                    st.tat[dim.name] = _stored_tat(rescaled)
        last_change = max(st.last_decrease_ms or 0.0, st.last_increase_ms or 0.0)
        ceiling = self._multiplier_ceiling(st, group)
        if st.multiplier < ceiling and st.last_decrease_ms is st.last_increase_ms is None:
            st.last_increase_ms = now  # an auto group's first clean window starts now
        elif st.multiplier < ceiling and now - last_change >= group.clean_window_s * 1000:
            decreased = st.last_decrease_ms is not None
            raised = raised_multiplier(group.aimd, st.multiplier, ceiling, decreased)
            self._rescale(st, group, now, st.multiplier, raised)
            st.multiplier, st.last_increase_ms = raised, now
        st.leases.pop(reservation_id, None)
        return True

    def pause(
        self,
        group: LimitGroup,
        duration_ms: float,
        *,
        rate_limited: bool = False,
        now_ms: float | None = None,
    ) -> float:
        """Close the gate until now + duration (never shortens); returns when it opens.
        ``rate_limited`` (a 429): decrease the multiplier once per epoch."""
        now = self.clock() if now_ms is None else now_ms
        st = self._state(group)
        heard = any(d.name in st.learned for d in group.dimensions if d.algorithm is Algorithm.GCRA)
        if rate_limited and not heard and now >= st.epoch_end_ms:
            lowered = max(group.aimd.floor, st.multiplier * group.aimd.decrease)
            self._rescale(st, group, now, st.multiplier, lowered)
            st.multiplier, st.last_decrease_ms = lowered, now
            paused_until = max(st.pause_ms, _ms(now + duration_ms))
            st.epoch_end_ms = paused_until + group.clean_window_s * 1000
        st.pause_ms = max(st.pause_ms, _ms(now + duration_ms))
        return st.pause_ms

    @staticmethod
    def _rescaled(tat: float, now: float, tolerance: float, factor: float) -> float:
        """A TAT after the rate changed by ``factor`` (old / new): the level in units is
        kept; the queue beyond now + tolerance stretches or shrinks."""
        return tat if tat <= now else now + tolerance + (tat - now - tolerance) * factor

    def _rescale(
        self, st: _GroupState, group: LimitGroup, now: float, old: float, new: float
    ) -> None:
        """The multiplier moves from ``old`` to ``new``: each bucket's queue follows its
        own rate (a dimension with a learned limit feels no multiplier above 1)."""
        for i, dim in enumerate(group.dimensions):
            tat = st.tat.get(dim.name)
            if dim.algorithm is Algorithm.GCRA and tat is not None and tat > now:
                tolerance = dim.period_ms * (1.0 - group.headroom)
                factor = self._effective_capacity(st, group, i, old) / self._effective_capacity(
                    st, group, i, new
                )
                st.tat[dim.name] = _stored_tat(self._rescaled(tat, now, tolerance, factor))

    def multiplier(self, group: LimitGroup) -> float:
        return self._state(group).multiplier

    def level(self, group: LimitGroup, dimension: str, *, now_ms: float | None = None) -> float:
        """Units a dimension could admit right now (negative when in debt or reserved)."""
        now = self.clock() if now_ms is None else now_ms
        dim = group.dimensions[group.index(dimension)]
        st = self._state(group)
        capacity = group.usable_capacity(dim)
        if dim.algorithm is Algorithm.GCRA:
            tat = st.tat.get(dim.name, 0.0)
            emission = self._emission_ms(st, group, group.index(dimension))
            effective = self._effective_capacity(st, group, group.index(dimension))
            return effective * (1.0 - group.headroom) - max(0.0, tat - now) / emission
        if dim.algorithm is Algorithm.SLIDING:
            live = [e[2] for e in st.log.get(dim.name, []) if e[0] > now - dim.period_ms]
            return capacity - math.fsum(live)
        starts = window_starts_ms(dim.period_s, dim.timezone or "UTC", now / 1000)
        current = max(x for x in starts if x <= now)
        return capacity - st.windows.get(dim.name, {}).get(current, 0.0)


# -- the fair scheduler (throttle/lua/schedule.lua) ------------------------------------


def lua_now_ms(now_us: int) -> float:
    """The clock reading a script computed (``server_now_ms``) from the µs it reported
    (``math.floor(now * 1000)``): the same float, so a replay takes the same branches."""
    for total_us in (now_us, now_us + 1):
        seconds, micros = divmod(total_us, 1_000_000)
        now = seconds * 1000 + micros / 1000
        if math.floor(now * 1000) == now_us:
            return now
    return now_us / 1000


@dataclass
class _Flow:
    lane: str
    items: list[str]
    finish: float
    weight: float
    group: LimitGroup  # the flow's limits: the group's and its tenant's own dimensions


@dataclass
class _Item:
    costs: Sequence[float]
    share: float  # the dominant share of the group's own dimensions
    deadline_ms: int  # 0: none


@dataclass
class _Lane:
    name: str
    rate: float  # min-share credit earned per unit released above it
    v: float = 0.0
    credit: float = 0.0
    ready: dict[str, float] = field(default_factory=dict)  # flow -> start tag
    idle: dict[str, float] = field(default_factory=dict)  # emptied flow -> finish tag


@dataclass
class _Queue:
    lanes: list[_Lane]
    flows: dict[str, _Flow] = field(default_factory=dict)
    items: dict[str, _Item] = field(default_factory=dict)
    blocked: dict[str, float] = field(default_factory=dict)  # flow -> when it may go, ms
    ready_n: int = 0
    all_n: int = 0
    due_us: int = -1
    saturated: bool = False
    chores_ms: float | None = None  # when the last housekeeping ran ('y')


@dataclass(frozen=True)
class ModelRelease:
    item_id: str
    #: The reserved slot (µs on the scripts' clock); 0 without a reservation.
    slot_us: int
    lease: bool
    #: 'ok', 'expired' or 'refused'.
    reason: str
    #: The pushed item itself, released by its own push.
    own: bool


@dataclass(frozen=True)
class ModelPass:
    #: When the next pass is due (µs on the scripts' clock); -1: when woken.
    due_us: int
    released: tuple[ModelRelease, ...]


class FairSchedulerModel:
    """The fair queue of ``schedule.lua`` over in-memory state, admitting through a
    :class:`LimiterModel`: flows per (lane, tenant), start-time fair queueing within a
    lane, strict priority with min-share credit between lanes, flows over their
    tenant's cap blocked until their slot, and the pass that stops at a saturated
    group. Once a second a pass drops old idle tags and the tenant buckets that are
    full again, as the script's housekeeping does for a state hash small enough to be
    scanned in one step.
    """

    def __init__(
        self,
        limiter: LimiterModel,
        lanes: Sequence[tuple[str, float]],
        *,
        release_lead_ms: int = 100,
        pass_limit: int = 200,
    ) -> None:
        self.limiter = limiter
        self.lanes = [(name, float(rate)) for name, rate in lanes]
        self.lead_ms = release_lead_ms
        self.pass_limit = pass_limit
        self.queues: dict[str, _Queue] = {}

    def _queue(self, group: LimitGroup) -> _Queue:
        if group.name not in self.queues:
            self.queues[group.name] = _Queue([_Lane(n, r) for n, r in self.lanes])
        return self.queues[group.name]

    def counts(self, group: LimitGroup) -> tuple[int, int]:
        """(items queued, of them in ready flows), as ``FairScheduler.queued``."""
        q = self._queue(group)
        return q.all_n, q.ready_n

    def push(
        self,
        group: LimitGroup,
        item_id: str,
        costs: Mapping[str, float],
        *,
        lane: str,
        flow: str,
        weight: float,
        deadline_ms: int,
        now_ms: float,
    ) -> ModelPass:
        """Queue one item in ``flow`` (of ``lane``) and run a pass. ``group`` holds the
        tenant's own dimensions too; ``deadline_ms`` is on the scripts' clock (0: none)."""
        q = self._queue(group)
        vector = group.cost_vector(costs)
        check_capacity(group, vector)
        shares = [
            cost / group.usable_capacity(dim)
            for dim, cost in zip(group.dimensions, vector, strict=True)
            if not dim.name.startswith("tenant.") and group.usable_capacity(dim) > 0
        ]
        if item_id not in q.items:  # one queued already (delivered again) stays put
            q.items[item_id] = _Item(vector, max(shares, default=0.0), deadline_ms)
            q.all_n += 1
            self._join(q, item_id, lane, flow, weight, group)
        if q.saturated and q.due_us > (now_ms + self.lead_ms) * 1000:
            return ModelPass(q.due_us, ())  # the pass would stop at the same limit
        return self._pass(group, q, now_ms, item_id)

    @staticmethod
    def _join(
        q: _Queue, item_id: str, lane: str, flow: str, weight: float, group: LimitGroup
    ) -> None:
        """An item joins the tail of its flow (a flow that was empty becomes ready)."""
        the_lane = next(x for x in q.lanes if x.name == lane)
        known = q.flows.get(flow)
        if known is None or not known.items:
            finish = the_lane.idle.pop(flow, the_lane.v)
            q.flows[flow] = _Flow(lane, [item_id], finish, float(weight), group)
            the_lane.ready[flow] = max(the_lane.v, finish)
            q.ready_n += 1
        else:
            known.items.append(item_id)
            if len(known.items) % 32 == 0:  # a flow's settings: at its start, every 32nd push
                known.weight, known.group = float(weight), group
            if flow not in q.blocked:
                q.ready_n += 1

    def run_pass(self, group: LimitGroup, *, now_ms: float) -> ModelPass:
        return self._pass(group, self._queue(group), now_ms, "")

    # -- the pass -------------------------------------------------------------------

    def _head(self, q: _Queue, lane: _Lane) -> tuple[str, float, str] | None:
        if not lane.ready:
            return None
        flow = min(lane.ready, key=lambda f: (lane.ready[f], f.encode()))
        return flow, lane.ready[flow], q.flows[flow].items[0]

    def _pop(self, q: _Queue, lane: _Lane, flow_id: str, start: float) -> None:
        flow = q.flows[flow_id]
        item = q.items[flow.items.pop(0)]
        q.ready_n, q.all_n = q.ready_n - 1, q.all_n - 1
        finish = start + item.share / flow.weight
        lane.v = start
        if flow.items:
            flow.finish = lane.ready[flow_id] = finish
        else:
            del lane.ready[flow_id], q.flows[flow_id]
            if finish > lane.v:
                lane.idle[flow_id] = finish

    def _pass(self, group: LimitGroup, q: _Queue, now: float, pushed: str) -> ModelPass:
        lead = self.lead_ms
        for flow_id in sorted(q.blocked, key=lambda f: (q.blocked[f], f.encode())):
            if q.blocked[flow_id] <= now + lead:
                del q.blocked[flow_id]
                flow = q.flows[flow_id]
                lane = next(x for x in q.lanes if x.name == flow.lane)
                lane.ready[flow_id] = max(lane.v, flow.finish)
                q.ready_n += len(flow.items)
        chores_due = q.chores_ms is None or now - q.chores_ms >= 1000
        if chores_due:
            for lane in q.lanes:
                lane.idle = {f: s for f, s in lane.idle.items() if s > lane.v}

        released: list[ModelRelease] = []
        due, saturated = -1, False

        def emit(item_id: str, slot_us: int, lease: bool, reason: str) -> None:
            del q.items[item_id]
            released.append(ModelRelease(item_id, slot_us, lease, reason, item_id == pushed))

        while len(released) < self.pass_limit:
            chosen: int | None = None
            by_credit = False
            heads: dict[int, tuple[str, float, str]] = {}
            for k, lane in enumerate(q.lanes):
                got = self._head(q, lane) if chosen is None or lane.rate > 0 else None
                if got is not None:
                    heads[k] = got
                    if chosen is None:
                        chosen = k
                    elif lane.credit > 0 and lane.credit >= q.items[got[2]].share:
                        chosen, by_credit = k, True
                        break
                elif lane.credit > 0 and (chosen is None or lane.rate > 0):
                    lane.credit = 0.0  # nothing ready: credit is not saved up
            if chosen is None:
                break
            lane = q.lanes[chosen]
            flow_id, start, item_id = heads[chosen]
            item, flow = q.items[item_id], q.flows[flow_id]
            if 0 < item.deadline_ms <= now:
                self._pop(q, lane, flow_id, start)
                emit(item_id, 0, False, "expired")
                continue
            got_in = self.limiter.admit(
                flow.group, item.costs, item_id, now_ms=now, max_wait_ms=lead, lease_ahead_ms=lead
            )
            slot_us = math.floor(got_in.slot_ms * 1000)
            if got_in.reserved:
                self._pop(q, lane, flow_id, start)
                emit(item_id, slot_us, got_in.lease and bool(group.concurrency), "ok")
                if by_credit:
                    lane.credit = max(0.0, lane.credit - item.share)
                for k in range(chosen + 1, len(q.lanes)):
                    if k in heads:
                        later = q.lanes[k]
                        later.credit = min(1.0, later.credit + later.rate * item.share)
            elif got_in.lease_cap:
                leases = self.limiter.groups[group.name].leases
                due, saturated = math.floor(min(leases.values()) * 1000), True
                break
            elif got_in.wait_ms == -1:  # a window that never fits it
                self._pop(q, lane, flow_id, start)
                emit(item_id, 0, False, "refused")
            elif (got_in.binding or "").startswith("tenant."):
                del lane.ready[flow_id]  # over its own tenant's cap: it waits alone
                q.blocked[flow_id] = math.floor(slot_us / 1000)
                q.ready_n -= len(flow.items)
            else:
                due, saturated = slot_us, True  # the group is saturated until then
                break
        if len(released) >= self.pass_limit:
            due = math.floor(now * 1000)
        elif due < 0 and q.blocked:
            due = math.floor(min(q.blocked.values()) * 1000)
        if chores_due:
            self._sweep_tenants(group, now)
            q.chores_ms = math.floor(now)
        q.due_us, q.saturated = due, saturated
        return ModelPass(due, tuple(released))

    def _sweep_tenants(self, group: LimitGroup, now: float) -> None:
        st = self.limiter.groups.get(group.name)
        if st is None:
            return
        for name in [n for n, tat in st.tat.items() if n.startswith("tenant.") and tat <= now]:
            del st.tat[name]

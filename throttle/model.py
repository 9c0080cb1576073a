"""A pure-Python reference model of the limiter's algorithms, with an injectable clock.

It implements exactly what the Lua scripts do (``throttle/lua``), in memory and without
locks, so unit tests can check the algorithms without Redis and property tests can
drive the model and the Redis limiter with the same operations and compare them.
Times are milliseconds; ``now_ms`` is passed to every operation. Its state lives in
:mod:`throttle.model_state`; the fair scheduler's model in :mod:`throttle.scheduler_model`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from throttle.calendar import window_starts_ms
from throttle.limits import Algorithm, LimitGroup, raised_multiplier, sliding_capacity
from throttle.model_state import (
    Entry,
    GroupState,
    ModelAdmission,
    ModelBegin,
    Record,
    check_capacity,
    rescaled,
    stored_ms,
    stored_tat,
)

_MAX_ROUNDS = 32


class LimiterModel:
    """The limiter's algorithms over in-memory state.

    ``clock`` returns the current time in ms; operations also accept ``now_ms``
    explicitly so a test can replay the server's clock.
    """

    def __init__(self, clock: Callable[[], float] | None = None, record_ttl_ms: float = 3.6e6):
        self.clock = clock or (lambda: 0.0)
        self.record_ttl_ms = record_ttl_ms
        self.groups: dict[str, GroupState] = {}

    def _state(self, group: LimitGroup) -> GroupState:
        return self.groups.setdefault(group.name, GroupState())

    # -- admission ----------------------------------------------------------------

    def admit(
        self,
        group: LimitGroup,
        costs: Mapping[str, float] | Sequence[float],
        reservation_id: str,
        *,
        now_ms: float | None = None,
        max_wait_ms: float | None = None,
        tenant_max_wait_ms: float | None = None,
        lease_ahead_ms: float | None = None,
    ) -> ModelAdmission:
        """``lease_ahead_ms`` (the fair scheduler's admission): a slot at most this far
        away takes its concurrency lease now, or nothing is reserved; a refused request
        keeps the cold start of a bucket it found without state. ``tenant_max_wait_ms``:
        nor is a slot reserved that a tenant's own GCRA dimension sets further away."""
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
        tenant_bound = (
            tenant_max_wait_ms is not None
            and wait > tenant_max_wait_ms
            and binding > 0
            and group.dimensions[binding - 1].algorithm is Algorithm.GCRA
            and group.dimensions[binding - 1].name.startswith("tenant.")
        )
        if not settled or (max_wait_ms is not None and wait > max_wait_ms) or tenant_bound:
            if lease_ahead_ms is not None:  # a cold bucket's start is kept
                for dim in group.dimensions:
                    if dim.algorithm is Algorithm.GCRA and dim.name not in st.tat:
                        st.tat[dim.name] = stored_tat(st.tat_at(group, dim.name, now))
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
        st.records[reservation_id] = Record(slot, entries, slot + self.record_ttl_ms)
        return ModelAdmission(True, wait, slot, lease or not group.concurrency, name)

    def _earliest(
        self, group: LimitGroup, st: GroupState, i: int, cost: float, s: float, now: float
    ) -> float | None:
        dim = group.dimensions[i]
        if dim.algorithm is Algorithm.GCRA:
            emission = st.emission_ms(group, i)
            tolerance = dim.period_ms * (1.0 - group.headroom)
            reach = min(cost * emission, tolerance)
            return max(s, st.tat_at(group, dim.name, now) + reach - tolerance)
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

    def _commit(
        self,
        group: LimitGroup,
        st: GroupState,
        i: int,
        cost: float,
        slot: float,
        rid: str,
        now: float,
    ) -> Entry:
        dim = group.dimensions[i]
        entry = Entry(dim.algorithm, cost)
        if dim.algorithm is Algorithm.GCRA:  # settle charges a cost-0 entry at this rate
            entry.emission_ms = st.emission_ms(group, i)
        if cost == 0:
            return entry
        if dim.algorithm is Algorithm.GCRA:
            emission = st.emission_ms(group, i)
            post = stored_tat(max(st.tat_at(group, dim.name, now), slot) + cost * emission)
            st.tat[dim.name] = post
            entry.post, entry.emission_ms = post, emission
        elif dim.algorithm is Algorithm.SLIDING:
            st.log.setdefault(dim.name, []).append((stored_ms(slot), rid, cost))
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

    def start_wait_ms(
        self, group: LimitGroup, costs: Mapping[str, float], *, now_ms: float | None = None
    ) -> float:
        """How long a request of ``costs`` would wait for the pause gate and the GCRA
        buckets if admitted now (``RedisLimiter.start_wait_from``); nothing changes."""
        now = self.clock() if now_ms is None else now_ms
        st = self._state(group)
        slot = max(now, st.pause_ms)
        for i, dim in enumerate(group.dimensions):
            if dim.algorithm is Algorithm.GCRA:
                cost = float(costs.get(dim.name, 0.0))
                slot = max(slot, self._earliest(group, st, i, cost, slot, now) or slot)
        return slot - now

    # -- after admission ----------------------------------------------------------

    def begin(
        self, group: LimitGroup, reservation_id: str, *, now_ms: float | None = None
    ) -> ModelBegin:
        """At the slot (begin.lua): check the pause gate, move the reservation's
        sliding-log entries to now if the window ending now has room for them, take the
        concurrency lease."""
        now = self.clock() if now_ms is None else now_ms
        st = self._state(group)
        if st.pause_ms > now:
            return ModelBegin(1, st.pause_ms - now)
        record = st.records.get(reservation_id)
        moves: list[tuple[list[tuple[float, str, float]], float]] = []
        for dim, entry in zip(group.dimensions, record.entries if record else (), strict=False):
            if entry.algorithm is not Algorithm.SLIDING or entry.where is None:
                continue
            log, window = st.log.setdefault(dim.name, []), group.window_ms(dim)
            held = next((e for e in log if e[1] == reservation_id), None)
            if held is not None and held[0] >= now:
                continue
            live = [e for e in log if e[0] > now - window and e[1] != reservation_id]
            excess = entry.cost - sliding_capacity(dim, st.multiplier) + sum(e[2] for e in live)
            for score, _rid, cost in live:  # wait for the oldest to leave
                if excess <= 0:
                    break
                excess -= cost
                if excess <= 0:
                    return ModelBegin(3, score + window - now + 0.001)
            moves.append((log, entry.cost if held is None else held[2]))  # one gone comes back
        for log, cost in moves:
            kept = [e for e in log if e[1] != reservation_id]
            log[:] = sorted([*kept, (stored_ms(now), reservation_id, cost)], key=lambda e: e[0])
        if group.concurrency:
            st.leases = {k: v for k, v in st.leases.items() if v > now}
            if reservation_id not in st.leases and len(st.leases) >= group.concurrency:
                return ModelBegin(2)
            st.leases[reservation_id] = now + group.lease_ttl_s * 1000
        return ModelBegin(0)

    def _take_record(self, group: LimitGroup, rid: str, now: float) -> Record | None:
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
                    st.tat[dim.name] = stored_tat(tat - entry.cost * entry.emission_ms)
                else:  # at today's rate: a change since rescaled the queue to it
                    refund = entry.cost * st.emission_ms(group, group.index(dim.name))
                    st.tat[dim.name] = stored_tat(max(now, tat - refund))
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
                before = st.effective_capacity(group, i)
                if limit is not None and limit > 0:
                    st.learned[dim.name] = limit
                now_capacity = st.effective_capacity(group, i)
                tat = after = st.tat.get(dim.name, 0.0)
                tolerance = dim.period_ms * (1.0 - group.headroom)
                queued = max(0.0, tat - now - tolerance)
                if now_capacity != before:  # the provider's limit changed
                    after = rescaled(tat, now, tolerance, before / now_capacity)
                    reach_after = max(reach_after, after - now - tolerance)
                    changed.add(dim.name)
                if queued > reach:
                    reach, binding_changed = queued, dim.name in changed
                emission = st.emission_ms(group, i)
                if delta != 0:
                    after = max(after, now) + delta * emission  # today's rate
                    after = max(after, now) if delta < 0 else after
                if remaining is not None:
                    capacity = st.effective_capacity(group, i)
                    ceiling = max(0.0, remaining) + max(0.0, granularity) / 2
                    if capacity - (after - now) / emission > ceiling:
                        after = now + (capacity - ceiling) * emission
                if after != tat:  # an untouched bucket without state stays without
                    st.tat[dim.name] = stored_tat(after)
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
                    moved = rescaled(tat_or_none, now, tolerance, queue_factor)
                    st.tat[dim.name] = stored_tat(moved)
        last_change = max(st.last_decrease_ms or 0.0, st.last_increase_ms or 0.0)
        ceiling = st.multiplier_ceiling(group)
        if st.multiplier < ceiling and st.last_decrease_ms is st.last_increase_ms is None:
            st.last_increase_ms = now  # an auto group's first clean window starts now
        elif st.multiplier < ceiling and now - last_change >= group.clean_window_s * 1000:
            decreased = st.last_decrease_ms is not None
            raised = raised_multiplier(group.aimd, st.multiplier, ceiling, decreased)
            st.rescale(group, now, st.multiplier, raised)
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
            st.rescale(group, now, st.multiplier, lowered)
            st.multiplier, st.last_decrease_ms = lowered, now
            paused_until = max(st.pause_ms, stored_ms(now + duration_ms))
            st.epoch_end_ms = paused_until + group.clean_window_s * 1000
        st.pause_ms = max(st.pause_ms, stored_ms(now + duration_ms))
        return st.pause_ms

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
            emission = st.emission_ms(group, group.index(dimension))
            effective = st.effective_capacity(group, group.index(dimension))
            return effective * (1.0 - group.headroom) - max(0.0, tat - now) / emission
        if dim.algorithm is Algorithm.SLIDING:
            live = [e[2] for e in st.log.get(dim.name, []) if e[0] > now - dim.period_ms]
            return capacity - math.fsum(live)
        starts = window_starts_ms(dim.period_s, dim.timezone or "UTC", now / 1000)
        current = max(x for x in starts if x <= now)
        return capacity - st.windows.get(dim.name, {}).get(current, 0.0)

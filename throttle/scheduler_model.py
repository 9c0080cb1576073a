"""A pure-Python model of the fair scheduler (``throttle/lua/schedule.lua``) over
in-memory state, admitting through a :class:`~throttle.model.LimiterModel`. Times are
milliseconds, or µs on the scripts' clock where the script speaks µs."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from throttle.limits import LimitGroup
from throttle.model import LimiterModel
from throttle.model_state import check_capacity


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

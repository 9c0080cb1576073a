"""The fair queue's part of a group's status: lanes, flows, and the shares and waits
each lane and tenant got lately (decayed statistics of the scheduler hash)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from throttle import fields
from throttle.scheduler import STATS_HALF_LIFE_MS, WAIT_BOUNDS_MS
from throttle.status_read import RawGroupState, number


@dataclass(frozen=True)
class FlowStatus:
    """One (lane, tenant) flow of the fair queue."""

    lane: str
    #: The tenant as its keys spell it (escaped), "" for requests without a tenant.
    tenant: str
    backlog: int
    weight: float
    #: Seconds until its tenant cap lets it go again; 0 when it is ready.
    blocked_for_s: float


@dataclass(frozen=True)
class ShareStatus:
    """What a lane, or a tenant in it, got of the group's released quota lately (every
    count decays with a half-life of a minute): its share of the released cost
    (dominant shares), the items released, and their waits in the fair queue (queued
    to slot; None before any release)."""

    share: float
    released: float
    wait_p50_s: float | None
    wait_p99_s: float | None


@dataclass(frozen=True)
class TenantStatus:
    lane: str
    #: As its keys spell it (escaped); "" without a tenant, "*" every tenant without
    #: its own plan, together.
    tenant: str
    used: ShareStatus


@dataclass(frozen=True)
class LaneStatus:
    name: str
    ready_flows: int
    #: The lane's virtual time (start-time fair queueing) and its min-share credit.
    virtual_time: float
    credit: float
    used: ShareStatus | None = None


@dataclass(frozen=True)
class SchedulerStatus:
    """The fair queue of one group (``throttle/lua/schedule.lua``)."""

    queued: int
    ready: int
    #: Seconds until the next pass is due as the last pass said; None: when woken.
    next_pass_in_s: float | None
    #: The last pass stopped at a group limit, the pause gate or the lease cap.
    saturated: bool
    lanes: tuple[LaneStatus, ...]
    #: The flows with work, largest backlog first (at most FLOWS_SHOWN).
    flows: tuple[FlowStatus, ...]
    #: What each tenant kept apart (and each lane's others, as "*") got lately,
    #: largest share first.
    tenants: tuple[TenantStatus, ...] = ()


#: Flows listed per group in the status (the largest backlogs).
FLOWS_SHOWN = 20


def decayed_stats(text: str | None, now_ms: float) -> tuple[float, list[float]]:
    """A statistics field of the scheduler hash ('stamp ms,cost,bucket:count...', the
    buckets numbered from 1) decayed to ``now_ms``: (cost, counts per wait bucket)."""
    if not text:
        return 0.0, [0.0] * (len(WAIT_BOUNDS_MS) + 1)
    stamp, cost, *buckets = text.split(",")
    factor = min(1.0, 2.0 ** (-(now_ms - float(stamp)) / STATS_HALF_LIFE_MS))
    counts = [0.0] * (len(WAIT_BOUNDS_MS) + 1)
    for bucket in buckets:
        k, _, n = bucket.partition(":")
        if 1 <= int(k) <= len(counts):
            counts[int(k) - 1] = float(n) * factor
    return float(cost) * factor, counts


def wait_quantile_s(counts: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile of a wait histogram (counts per WAIT_BOUNDS_MS bucket and one
    beyond), interpolated within its bucket; the last bucket reports its lower bound."""
    total = sum(counts)
    if total <= 0:
        return None
    target, below = q * total, 0.0
    for k, n in enumerate(counts):
        if n > 0 and below + n >= target:
            lower = WAIT_BOUNDS_MS[k - 1] if k > 0 else 0.0
            if k >= len(WAIT_BOUNDS_MS):
                return lower / 1000
            return (lower + (WAIT_BOUNDS_MS[k] - lower) * (target - below) / n) / 1000
        below += n
    return WAIT_BOUNDS_MS[-1] / 1000


def share_status(cost: float, counts: Sequence[float], group_cost: float) -> ShareStatus:
    return ShareStatus(
        share=cost / group_cost if group_cost > 0 else 0.0,
        released=sum(counts),
        wait_p50_s=wait_quantile_s(counts, 0.5),
        wait_p99_s=wait_quantile_s(counts, 0.99),
    )


def _usage(
    sched: Mapping[str, str], now_ms: float, lanes: Sequence[str]
) -> tuple[dict[str, ShareStatus], tuple[TenantStatus, ...]]:
    """Per lane and per tenant kept apart: what they got lately (STATS)."""
    group_cost, _ = decayed_stats(sched.get(fields.Q_STATS), now_ms)
    by_lane: dict[str, tuple[float, list[float]]] = {}
    tenants = []
    for name, text in sched.items():
        if not name.startswith(fields.Q_FLOW_STATS):
            continue
        lane, _, tenant = name.removeprefix(fields.Q_FLOW_STATS).partition("|")
        cost, counts = decayed_stats(text, now_ms)
        tenants.append(TenantStatus(lane, tenant, share_status(cost, counts, group_cost)))
        lane_cost, lane_counts = by_lane.get(lane, (0.0, [0.0] * len(counts)))
        by_lane[lane] = (
            lane_cost + cost,
            [a + b for a, b in zip(lane_counts, counts, strict=True)],
        )
    tenants.sort(key=lambda t: (-t.used.share, t.lane, t.tenant))
    lane_usage = {
        lane: share_status(cost, counts, group_cost)
        for lane, (cost, counts) in by_lane.items()
        if lane in lanes
    }
    return lane_usage, tuple(tenants)


def scheduler_status(raw: RawGroupState, lanes: Sequence[str]) -> SchedulerStatus | None:
    """The fair queue's state; None when the group never queued anything."""
    sched, now_ms = raw.sched, raw.now_ms
    if not sched:
        return None
    due_us = number(sched, fields.Q_DUE)
    flows = []
    for flow, backlog in raw.backlog.items():
        lane, _, tenant = flow.partition("|")
        blocked_ms = raw.blocked.get(flow)
        flows.append(
            FlowStatus(
                lane,
                tenant,
                backlog,
                number(sched, fields.Q_WEIGHT + flow) or 1.0,
                0.0 if blocked_ms is None else max(0.0, blocked_ms - now_ms) / 1000,
            )
        )
    flows.sort(key=lambda f: (-f.backlog, f.lane, f.tenant))
    lane_usage, tenants = _usage(sched, now_ms, lanes)
    return SchedulerStatus(
        queued=int(number(sched, fields.Q_ITEMS) or 0),
        ready=int(number(sched, fields.Q_READY) or 0),
        next_pass_in_s=None
        if due_us is None or due_us < 0
        else max(0.0, due_us / 1000 - now_ms) / 1000,
        saturated=sched.get(fields.Q_SATURATED) == "1",
        lanes=tuple(
            LaneStatus(
                name,
                len(raw.ready.get(name, {})),
                number(sched, fields.Q_VIRTUAL_TIME + name) or 0.0,
                number(sched, fields.Q_CREDIT + name) or 0.0,
                lane_usage.get(name),
            )
            for name in lanes
        ),
        flows=tuple(flows[:FLOWS_SHOWN]),
        tenants=tenants[:FLOWS_SHOWN],
    )

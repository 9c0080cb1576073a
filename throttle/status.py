"""What ``llm-throttle status`` shows: every configured limit group, read from Redis.

The pure functions turn one raw Redis read (the group's state hash, the server clock,
counts of leases and parked tasks) into a :class:`GroupStatus`; :func:`read_status`
is the only function doing I/O. The reader never writes: expired leases are left for
the scripts to drop and are simply not counted.

State hash fields are named in :mod:`throttle.fields` (shared with the Lua scripts),
times in ms since :data:`throttle.limiter.EPOCH_MS` on the Redis server's clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import redis

from throttle import fields as state_fields
from throttle.config import Config, GroupSettings
from throttle.connect import RedisClient
from throttle.errors import StorageError
from throttle.keys import KeyBuilder
from throttle.limiter import EPOCH_MS, as_text
from throttle.limits import Algorithm, Dimension, effective_capacity, sliding_capacity
from throttle.scheduler import STATS_HALF_LIFE_MS, WAIT_BOUNDS_MS


@dataclass(frozen=True)
class RawGroupState:
    """One group's state as read from Redis, before interpretation."""

    #: The state hash, decoded to text.
    fields: Mapping[str, str]
    #: Server clock, ms since EPOCH_MS.
    now_ms: float
    #: Leases whose expiry is after now.
    in_flight: int
    #: Entries in the parked zset.
    parked: int
    #: Parked entries taken by a dispatcher and not yet acknowledged.
    releasing: int
    #: The fair queue: its hash, each lane's ready flows (flow -> start tag), the
    #: blocked flows (flow -> ms they may go again) and each listed flow's backlog.
    sched: Mapping[str, str] = field(default_factory=dict)
    ready: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    blocked: Mapping[str, float] = field(default_factory=dict)
    backlog: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class DimensionStatus:
    name: str
    algorithm: str
    period_s: float
    configured_capacity: float
    #: What the provider's headers said (GCRA only); None if nothing was heard.
    learned_capacity: float | None
    #: min(configured, learned) x AIMD multiplier for GCRA; configured otherwise.
    effective_capacity: float
    effective_rate_per_s: float
    #: Units an admission could take now (negative: in debt, the queue reaches into
    #: the future); None where the state does not tell (calendar windows).
    level_units: float | None
    #: The most the bucket holds now: effective capacity after headroom.
    usable_units: float


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


@dataclass(frozen=True)
class GroupStatus:
    name: str
    provider: str
    multiplier: float
    #: Seconds until the pause gate opens; 0 when not paused.
    paused_for_s: float
    #: Unix ms the gate opens at, None when not paused.
    paused_until_unix_ms: float | None
    in_flight: int
    concurrency: int | None
    parked: int
    releasing: int
    #: Seconds since the last AIMD decrease (a provider 429), None if never.
    last_decrease_s_ago: float | None
    #: Seconds left in that decrease's epoch (further 429s in it do not decrease again).
    decrease_epoch_left_s: float
    #: Seconds since the last additive increase, None if never.
    last_increase_s_ago: float | None
    dimensions: tuple[DimensionStatus, ...]
    scheduler: SchedulerStatus | None = None

    @property
    def paused(self) -> bool:
        return self.paused_for_s > 0


# -- pure functions ------------------------------------------------------------------


def decode_fields(raw: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    """A hash as redis-py returns it (bytes or str) as text."""
    return {as_text(key): as_text(value) for key, value in raw.items()}


def server_now_ms(seconds: int, micros: int) -> float:
    """The reply of Redis TIME as ms since EPOCH_MS (the scripts' clock)."""
    return (int(seconds) * 1000 - EPOCH_MS) + int(micros) / 1000


def _number(fields: Mapping[str, str], name: str) -> float | None:
    value = fields.get(name)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def gcra_level_units(
    effective_capacity: float,
    headroom: float,
    tat_ms: float | None,
    now_ms: float,
    emission_ms: float,
    cold_start: float,
) -> float:
    """Units available now: capacity_eff x (1 - headroom) - max(0, TAT - now) / emission.

    Without a TAT the bucket is as admit.lua assumes: ``cold_start`` full."""
    usable = effective_capacity * (1.0 - headroom)
    if tat_ms is None:
        return usable * cold_start
    return usable - max(0.0, tat_ms - now_ms) / emission_ms


def dimension_status(
    dim: Dimension,
    fields: Mapping[str, str],
    now_ms: float,
    multiplier: float,
    headroom: float,
    cold_start: float,
) -> DimensionStatus:
    learned: float | None = None
    effective = dim.capacity
    level: float | None = None
    if dim.algorithm is Algorithm.GCRA:
        learned = _number(fields, state_fields.LEARNED + dim.name)
        effective = effective_capacity(dim, learned, multiplier)
        tat_us = _number(fields, state_fields.TAT + dim.name)  # stored in whole µs (lib/common.lua)
        tat_ms = None if tat_us is None else tat_us / 1000
        emission_ms = dim.period_ms / effective
        level = gcra_level_units(effective, headroom, tat_ms, now_ms, emission_ms, cold_start)
        usable = effective * (1.0 - headroom)
    else:  # a window is used whole (throttle.limits.LimitGroup.usable_capacity)
        if dim.algorithm is Algorithm.SLIDING:
            effective = sliding_capacity(dim, multiplier)
        usable = effective
    if dim.algorithm is Algorithm.SLIDING:  # the sum may still hold expired entries
        level = usable - (_number(fields, state_fields.SLIDING_SUM + dim.name) or 0.0)
    return DimensionStatus(
        name=dim.name,
        algorithm=dim.algorithm.value,
        period_s=dim.period_s,
        configured_capacity=dim.capacity,
        learned_capacity=learned,
        effective_capacity=effective,
        effective_rate_per_s=effective / dim.period_s,
        level_units=level,
        usable_units=usable,
    )


def _ago_s(fields: Mapping[str, str], name: str, now_ms: float) -> float | None:
    at = _number(fields, name)
    return None if at is None else max(0.0, now_ms - at) / 1000


def group_status(
    group: GroupSettings, raw: RawGroupState, lanes: Sequence[str] = (), name: str | None = None
) -> GroupStatus:
    """Interpret one group's raw state (``lanes``: the scheduler's, highest first;
    ``name``: the limit group's, ``<group>@<credential>`` for one credential's)."""
    fields, now_ms = raw.fields, raw.now_ms
    multiplier = _number(fields, state_fields.MULTIPLIER) or 1.0
    pause_ms = _number(fields, state_fields.PAUSE) or 0.0
    paused_for_s = max(0.0, pause_ms - now_ms) / 1000
    epoch_end_ms = _number(fields, state_fields.EPOCH_END) or 0.0
    return GroupStatus(
        name=name or group.name,
        provider=group.provider,
        multiplier=multiplier,
        paused_for_s=paused_for_s,
        paused_until_unix_ms=pause_ms + EPOCH_MS if paused_for_s > 0 else None,
        in_flight=raw.in_flight,
        concurrency=group.concurrency,
        parked=raw.parked,
        releasing=raw.releasing,
        last_decrease_s_ago=_ago_s(fields, state_fields.DECREASED, now_ms),
        decrease_epoch_left_s=max(0.0, epoch_end_ms - now_ms) / 1000,
        last_increase_s_ago=_ago_s(fields, state_fields.INCREASED, now_ms),
        dimensions=tuple(
            dimension_status(d, fields, now_ms, multiplier, group.headroom, group.cold_start)
            for d in group.dimensions
        ),
        scheduler=scheduler_status(raw, lanes),
    )


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
    group_cost, _ = decayed_stats(sched.get("q"), now_ms)
    by_lane: dict[str, tuple[float, list[float]]] = {}
    tenants = []
    for name, text in sched.items():
        if not name.startswith("q:"):
            continue
        lane, _, tenant = name[2:].partition("|")
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
    due_us = _number(sched, "d")
    flows = []
    for flow, backlog in raw.backlog.items():
        lane, _, tenant = flow.partition("|")
        blocked_ms = raw.blocked.get(flow)
        flows.append(
            FlowStatus(
                lane,
                tenant,
                backlog,
                _number(sched, f"w:{flow}") or 1.0,
                0.0 if blocked_ms is None else max(0.0, blocked_ms - now_ms) / 1000,
            )
        )
    flows.sort(key=lambda f: (-f.backlog, f.lane, f.tenant))
    lane_usage, tenants = _usage(sched, now_ms, lanes)
    return SchedulerStatus(
        queued=int(_number(sched, "n") or 0),
        ready=int(_number(sched, "r") or 0),
        next_pass_in_s=None
        if due_us is None or due_us < 0
        else max(0.0, due_us / 1000 - now_ms) / 1000,
        saturated=sched.get("s") == "1",
        lanes=tuple(
            LaneStatus(
                name,
                len(raw.ready.get(name, {})),
                _number(sched, f"v:{name}") or 0.0,
                _number(sched, f"c:{name}") or 0.0,
                lane_usage.get(name),
            )
            for name in lanes
        ),
        flows=tuple(flows[:FLOWS_SHOWN]),
        tenants=tenants[:FLOWS_SHOWN],
    )


def status_document(statuses: Sequence[GroupStatus], now_ms: float) -> dict[str, Any]:
    """The ``--json`` document: server time (Unix ms) and every group."""
    groups = []
    for status in statuses:
        item = asdict(status)
        item["paused"] = status.paused
        groups.append(item)
    return {"server_time_unix_ms": now_ms + EPOCH_MS, "groups": groups}


def redact_url(url: str) -> str:
    """A Redis URL fit for messages: the password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


# -- I/O -----------------------------------------------------------------------------


def read_raw_states(
    client: RedisClient, keys: KeyBuilder, groups: Sequence[str], lanes: Sequence[str] = ()
) -> tuple[float, list[RawGroupState]]:
    """Server now (ms since EPOCH_MS) and every group's raw state: three round trips."""
    per_group = 6 + len(lanes)
    try:
        seconds, micros = cast(tuple[int, int], client.time())
        now_ms = server_now_ms(seconds, micros)
        pipe = client.pipeline(transaction=False)
        for name in groups:
            pipe.hgetall(keys.state(name))
            pipe.zcount(keys.leases(name), f"({now_ms!r}", "+inf")
            pipe.zcard(keys.parked(name))
            pipe.zcard(keys.releasing(name))
            pipe.hgetall(keys.scheduler(name))
            pipe.zrange(keys.blocked(name), 0, -1, withscores=True)
            for lane in lanes:
                pipe.zrange(f"{keys.group_prefix(name)}ready:{lane}", 0, -1, withscores=True)
        replies = pipe.execute()
        states = []
        for g, name in enumerate(groups):
            at = g * per_group
            ready = {
                lane: {as_text(f): float(v) for f, v in replies[at + 6 + k]}
                for k, lane in enumerate(lanes)
            }
            blocked = {as_text(f): float(v) for f, v in replies[at + 5]}
            flows = sorted({*blocked, *(f for r in ready.values() for f in r)})
            for flow in flows:
                pipe.llen(f"{keys.group_prefix(name)}fq:{flow}")
            backlog = dict(zip(flows, (int(n) for n in pipe.execute()), strict=True))
            states.append(
                RawGroupState(
                    fields=decode_fields(replies[at]),
                    now_ms=now_ms,
                    in_flight=int(replies[at + 1]),
                    parked=int(replies[at + 2]),
                    releasing=int(replies[at + 3]),
                    sched={  # its packed specs are binary: only the text fields matter
                        as_text(k): v.decode("utf-8", "replace") if isinstance(v, bytes) else v
                        for k, v in replies[at + 4].items()
                        if not bytes(k if isinstance(k, bytes) else k.encode()).startswith(b"p:")
                    },
                    ready=ready,
                    blocked=blocked,
                    backlog=backlog,
                )
            )
    except redis.RedisError as exc:
        raise StorageError(f"redis status read failed: {exc}") from exc
    return now_ms, states


def read_status(client: RedisClient, config: Config) -> tuple[float, list[GroupStatus]]:
    """Every configured limit group's status (one per credential of a group with
    several), in name order; server now in ms since EPOCH_MS."""
    names = sorted(config.limit_group_names())
    lanes = [lane.name for lane in config.scheduler.lanes]
    now_ms, raws = read_raw_states(client, KeyBuilder(config.redis.prefix), names, lanes)
    statuses = []
    for name, raw in zip(names, raws, strict=True):
        named = config.limit_group_named(name)
        assert named is not None
        statuses.append(group_status(named[0], raw, lanes, name))
    return now_ms, statuses

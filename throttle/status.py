"""What ``llm-throttle status`` shows: every configured limit group, read from Redis.

The pure functions turn one raw Redis read (:mod:`throttle.status_read`: the group's
state hash, the server clock, counts of leases and parked tasks, the fair queue) into a
:class:`GroupStatus` (its fair queue's part: :mod:`throttle.queue_status`);
:func:`read_status` reads and interprets every configured group. The reader never
writes: expired leases are left for the scripts to drop and are simply not counted.

State hash fields are named in :mod:`throttle.fields` (shared with the Lua scripts),
times in ms since :data:`throttle.limiter.EPOCH_MS` on the Redis server's clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from throttle import fields as state_fields
from throttle.config import Config, GroupSettings
from throttle.connect import RedisClient
from throttle.keys import KeyBuilder
from throttle.limits import Algorithm, Dimension, effective_capacity, sliding_capacity
from throttle.queue_status import (
    FLOWS_SHOWN,
    FlowStatus,
    LaneStatus,
    SchedulerStatus,
    ShareStatus,
    TenantStatus,
    decayed_stats,
    scheduler_status,
    share_status,
    wait_quantile_s,
)
from throttle.spec import EPOCH_MS
from throttle.status_read import (
    RawGroupState,
    decode_fields,
    number,
    read_raw_states,
    server_now_ms,
)

#: The status's parts, wherever they are defined (the raw read, the fair queue's part).
__all__ = [
    "FLOWS_SHOWN",
    "DimensionStatus",
    "FlowStatus",
    "GroupStatus",
    "LaneStatus",
    "RawGroupState",
    "SchedulerStatus",
    "ShareStatus",
    "TenantStatus",
    "decayed_stats",
    "decode_fields",
    "dimension_status",
    "gcra_level_units",
    "group_status",
    "read_raw_states",
    "read_status",
    "redact_url",
    "scheduler_status",
    "server_now_ms",
    "share_status",
    "status_document",
    "wait_quantile_s",
]


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
        learned = number(fields, state_fields.LEARNED + dim.name)
        effective = effective_capacity(dim, learned, multiplier)
        tat_us = number(fields, state_fields.TAT + dim.name)  # stored in whole µs (lib/common.lua)
        tat_ms = None if tat_us is None else tat_us / 1000
        emission_ms = dim.period_ms / effective
        level = gcra_level_units(effective, headroom, tat_ms, now_ms, emission_ms, cold_start)
        usable = effective * (1.0 - headroom)
    else:  # a window is used whole (throttle.limits.LimitGroup.usable_capacity)
        if dim.algorithm is Algorithm.SLIDING:
            effective = sliding_capacity(dim, multiplier)
        usable = effective
    if dim.algorithm is Algorithm.SLIDING:  # the sum may still hold expired entries
        level = usable - (number(fields, state_fields.SLIDING_SUM + dim.name) or 0.0)
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
    at = number(fields, name)
    return None if at is None else max(0.0, now_ms - at) / 1000


def group_status(
    group: GroupSettings, raw: RawGroupState, lanes: Sequence[str] = (), name: str | None = None
) -> GroupStatus:
    """Interpret one group's raw state (``lanes``: the scheduler's, highest first;
    ``name``: the limit group's, ``<group>@<credential>`` for one credential's)."""
    fields, now_ms = raw.fields, raw.now_ms
    multiplier = number(fields, state_fields.MULTIPLIER) or 1.0
    pause_ms = number(fields, state_fields.PAUSE) or 0.0
    paused_for_s = max(0.0, pause_ms - now_ms) / 1000
    epoch_end_ms = number(fields, state_fields.EPOCH_END) or 0.0
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

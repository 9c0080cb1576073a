"""When a request would start in a group, from one read of its state hash: the
arithmetic of admit.lua's GCRA admission, in Python, without reserving anything (to
choose among groups, the credentials of one; the gateway's backpressure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from throttle import fields
from throttle.limits import LimitGroup, effective_capacity
from throttle.reservation import StartWait
from throttle.spec import EPOCH_MS, Plan


def start_wait_fields(group: LimitGroup, plan: Plan) -> list[str]:
    """The state hash fields :func:`start_wait` reads, in its order."""
    dims = group.dimensions
    names = [fields.PAUSE, fields.MULTIPLIER, fields.QUEUED]
    for i in plan.order[: plan.gcra_count]:
        names += [fields.TAT + dims[i].name, fields.LEARNED + dims[i].name]
    return names


def start_wait(
    group: LimitGroup,
    plan: Plan,
    costs: Mapping[str, float],
    server_time: Sequence[Any],
    values: Sequence[Any],
) -> StartWait:
    """The start of a request of ``costs`` (``server_time``: TIME's reply, ``values``:
    HMGET's of :func:`start_wait_fields`)."""
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

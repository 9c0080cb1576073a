"""Property test: the fair scheduler in Redis and its reference model agree.

Hypothesis draws a sequence of pushes (three tenants, two of them capped, two lanes,
random costs, weights and deadlines), passes, settles of released items (which give
concurrency leases back) and pauses. Each runs on Redis (``schedule.lua`` through
:class:`FairScheduler`), then on :class:`FairSchedulerModel` at the clock the script
reported. Every pass must release the same items, in the same order, with the same
slots, leases and reasons, and tell the same next due time and counts.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from throttle.config import Lane
from throttle.connect import connect
from throttle.errors import CostExceedsCapacityError
from throttle.keys import KeyBuilder
from throttle.limiter import EPOCH_MS, RedisLimiter
from throttle.limits import Dimension, LimitGroup
from throttle.model import LimiterModel
from throttle.scheduler import FairScheduler, QueuedItem, SchedulePass, flow_id
from throttle.scheduler_model import FairSchedulerModel, ModelPass, lua_now_ms

pytestmark = pytest.mark.integration

LANES = (Lane("interactive"), Lane("batch", 0.5))
#: Short periods: a test's few milliseconds between operations free capacity, so
#: every kind of pass (releasing, saturated, tenant-blocked, by credit) occurs.
LEAD_MS = 10
BASE = (Dimension.parse("requests", "20/40ms"), Dimension.parse("tokens", "20000/40ms"))
#: Tenant -> its own caps (nested under the group's limits, as config.limit_group does).
TENANT_CAPS: dict[str | None, tuple[Dimension, ...]] = {
    None: (),
    "a": (),
    "b": (Dimension.parse("tenant.b.requests", "2/40ms"),),
    "c": (Dimension.parse("tenant.c.tokens", "1000/40ms"),),
}


def tenant_group(tenant: str | None, concurrency: int | None) -> LimitGroup:
    return LimitGroup(
        "sched-prop",
        (*BASE, *TENANT_CAPS[tenant]),
        concurrency=concurrency,
        headroom=0.0,
        cold_start=0.5,
    )


push_op = st.tuples(
    st.just("push"),
    st.sampled_from([None, "a", "b", "c"]),
    st.sampled_from([lane.name for lane in LANES]),
    st.integers(0, 2),  # requests
    st.integers(0, 1000),  # tokens
    st.sampled_from([1.0, 2.0, 0.5]),  # weight
    st.one_of(st.none(), st.integers(-5, 60)),  # deadline, ms after the last pass
)
pass_op = st.tuples(st.just("pass"))
settle_op = st.tuples(st.just("settle"), st.integers(0, 40))
pause_op = st.tuples(st.just("pause"), st.integers(1, 30))
#: An earlier push again, with the same item id (its message delivered twice).
repush_op = st.tuples(st.just("repush"), st.integers(0, 60))
operations = st.lists(
    st.one_of(push_op, push_op, push_op, pass_op, settle_op, pause_op, repush_op),
    min_size=10,
    max_size=60,
)


def script_now(absolute_ms: float) -> float:
    """A time the limiter reported (Unix ms) as the scripts' clock reading."""
    return lua_now_ms(round((absolute_ms - EPOCH_MS) * 1000))


def assert_same(got: SchedulePass, want: ModelPass, context: Any) -> None:
    released = [
        (r.item_id, r.reason, r.lease, r.own, round((r.slot_ms - EPOCH_MS) * 1000))
        for r in got.released
    ]
    expected = [
        (r.item_id, r.reason, r.lease, r.own, r.slot_us if r.reason == "ok" else None)
        for r in want.released
    ]
    for (gid, greason, glease, gown, gslot), (wid, wreason, wlease, wown, wslot) in zip(
        released, expected, strict=False
    ):
        assert (gid, greason, glease, gown) == (wid, wreason, wlease, wown), (context, released)
        if wslot is not None:
            assert abs(gslot - wslot) <= 2, (context, released, expected)
    assert len(released) == len(expected), (context, released, expected)
    got_due = -1 if got.due_ms is None else round((got.due_ms - EPOCH_MS) * 1000)
    assert (got_due < 0) == (want.due_us < 0), (context, got_due, want.due_us)
    assert abs(got_due - want.due_us) <= 2, (context, got_due, want.due_us)


def assert_same_state(
    client: redis.Redis, keys: KeyBuilder, model: FairSchedulerModel, context: Any
) -> None:
    """Tags, credits, ready and idle flows, blocked flows and every bucket's TAT."""
    name = "sched-prop"
    queue = model.queues[name]
    prefix = keys.group_prefix(name)
    fields = [f"{x}:{lane.name}" for lane in queue.lanes for x in ("v", "c")]
    sched = dict(zip(fields, client.hmget(keys.scheduler(name), fields), strict=True))

    def zset(key: str) -> dict[str, float]:
        return {m.decode(): s for m, s in client.zrange(key, 0, -1, withscores=True)}

    assert zset(keys.blocked(name)) == queue.blocked, context
    for lane in queue.lanes:
        assert zset(f"{prefix}ready:{lane.name}") == lane.ready, (context, lane.name)
        assert zset(f"{prefix}idle:{lane.name}") == lane.idle, (context, lane.name)
        assert float(sched[f"v:{lane.name}"] or 0) == lane.v, (context, lane.name)
        assert float(sched[f"c:{lane.name}"] or 0) == lane.credit, (context, lane.name)
    state = {k.decode(): v.decode() for k, v in client.hgetall(keys.state(name)).items()}
    tats = {k[2:]: int(v) for k, v in state.items() if k.startswith("t:")}
    modelled = model.limiter.groups[name].tat if name in model.limiter.groups else {}
    assert tats == {k: round(v * 1000) for k, v in modelled.items()}, context


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(operations)
@pytest.mark.parametrize("concurrency", [None, 3], ids=["rates", "leases"])
def test_redis_and_model_schedule_alike(
    redis_url: str, concurrency: int | None, ops: list[tuple[Any, ...]]
) -> None:
    client = connect(redis_url)
    limiter = RedisLimiter(client, keys=KeyBuilder(f"q{uuid.uuid4().hex[:8]}"))
    scheduler = FairScheduler(limiter, LANES, release_lead_s=LEAD_MS / 1000)
    limiter_model = LimiterModel()
    lanes = [(lane.name, lane.credit_rate) for lane in LANES]
    model = FairSchedulerModel(limiter_model, lanes, release_lead_ms=LEAD_MS)
    base = tenant_group(None, concurrency)
    released: list[tuple[str, str, str | None]] = []  # (item id, handle, tenant)
    queued: set[int] = set()  # the pushes whose items wait in the queue
    last_now = 0.0
    try:
        for n, op in enumerate(ops):
            kind, push_n = op[0], n
            if kind == "repush":  # one still queued (a released one runs again)
                earlier = [m for m in range(n) if ops[m][0] == "push" and m in queued]
                if not earlier:
                    continue
                push_n = earlier[op[1] % len(earlier)]
                kind, op = "push", ops[push_n]
            if kind == "push":
                _, tenant, lane, requests, tokens, weight, deadline = op
                group = tenant_group(tenant, concurrency)
                asked = {"requests": float(requests), "tokens": float(tokens)}
                costs = {d.name: asked[d.name.rsplit(".", 1)[-1]] for d in group.dimensions}
                deadline_ms = 0 if deadline is None else max(1, int(last_now + deadline))
                item_id = f"i{push_n}"
                item = QueuedItem(
                    item_id,
                    costs,
                    lane,
                    tenant,
                    weight,
                    EPOCH_MS + deadline_ms if deadline_ms else 0,
                    "{}",
                )
                try:
                    got = scheduler.push(group, item)
                except CostExceedsCapacityError:
                    with pytest.raises(CostExceedsCapacityError):
                        model.push(
                            group, item_id, costs, lane=lane, flow="", weight=1, deadline_ms=0,
                            now_ms=last_now,
                        )  # fmt: skip
                    continue
                now = script_now(got.now_ms)
                want = model.push(
                    group,
                    item_id,
                    costs,
                    lane=lane,
                    flow=flow_id(lane, tenant),
                    weight=weight,
                    deadline_ms=deadline_ms,
                    now_ms=now,
                )
            elif kind == "pass":
                got = scheduler.run_pass(base)
                now = script_now(got.now_ms)
                want = model.run_pass(base, now_ms=now)
            elif kind == "settle" and released:
                item_id, handle, tenant = released.pop(op[1] % len(released))
                group = tenant_group(tenant, concurrency)
                settled = limiter.settle(group, handle, {})
                done = limiter_model.settle(
                    group, item_id, {}, now_ms=script_now(settled.now_ms) if settled else 0.0
                )
                assert (settled is not None) == done, op
                continue
            elif kind == "pause":
                paused = limiter.pause(base, op[1] / 1000)
                limiter_model.pause(base, op[1], now_ms=script_now(paused.now_ms))
                continue
            else:
                continue
            last_now = now
            assert_same(got, want, (n, op))
            assert scheduler.queued(base.name) == model.counts(base), (n, op)
            assert_same_state(client, limiter.keys, model, (n, op))
            tenants = {i: op[1] for i, op in enumerate(ops) if op[0] == "push"}
            if kind == "push":
                queued.add(push_n)
            queued.difference_update(int(r.item_id[1:]) for r in got.released)
            for r in got.released:
                if r.reservation is not None:
                    released.append((r.item_id, r.reservation, tenants[int(r.item_id[1:])]))
    finally:
        client.close()

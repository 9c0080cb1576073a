"""The fair scheduler (throttle/lua/schedule.lua) against a real redis-server.

The order of releases under a backlog does not depend on timing: every flow is
backlogged, so each pass releases what start-time fair queueing says. The tests run
passes until enough items are released and check who got them.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import time

import pytest
import redis
from conftest import command_calls, keys_matching

from throttle.config import Lane
from throttle.errors import CostExceedsCapacityError
from throttle.keys import KeyBuilder
from throttle.limiter import RedisLimiter
from throttle.limits import LimitGroup
from throttle.scheduler import FairScheduler, QueuedItem, SchedulePass

pytestmark = pytest.mark.integration

LANES = [Lane("interactive"), Lane("batch", 0.2)]


@pytest.fixture
def scheduler(redis_client: redis.Redis, key_prefix: str) -> FairScheduler:
    limiter = RedisLimiter(redis_client, keys=KeyBuilder(key_prefix))
    return FairScheduler(limiter, LANES, release_lead_s=0.05)  # the timings below assume it


def item(name: str, tenant: str, *, weight: float = 1.0, lane: str = "interactive") -> QueuedItem:
    return QueuedItem(name, {"requests": 1}, lane, tenant, weight, 0, f"{lane}/{tenant}")


def drain(
    scheduler: FairScheduler, group: LimitGroup, count: int, first: SchedulePass
) -> list[str]:
    """Run passes (at their due times) until ``count`` more items are released."""
    released = [r.payload for r in first.released]
    due_s = first.due_in_s
    give_up = time.monotonic() + 60
    while len(released) < count and time.monotonic() < give_up:
        time.sleep(min(0.2, due_s if due_s is not None else 0.01))
        done = scheduler.run_pass(group)
        released += [r.payload for r in done.released]
        due_s = done.due_in_s
    return released


def saturated(name: str, rate: str = "40/s") -> LimitGroup:
    """A group whose bucket starts empty: nothing is released at once."""
    return dataclasses.replace(LimitGroup.from_specs(name, {"requests": rate}), cold_start=0.01)


def full(name: str, specs: dict[str, str]) -> LimitGroup:
    """A group whose buckets start full."""
    return dataclasses.replace(LimitGroup.from_specs(name, specs), cold_start=1.0)


def test_weights_share_a_contended_quota(scheduler: FairScheduler) -> None:
    group = saturated("weights")
    early: list[str] = []
    for n in range(60):
        for tenant, weight in (("a", 1.0), ("b", 1.0), ("c", 2.0)):
            last = scheduler.push(group, item(f"{tenant}{n}", tenant, weight=weight))
            early += [r.payload for r in last.released]
    got = collections.Counter((early + drain(scheduler, group, 80, last))[:80])
    assert got["interactive/a"] == pytest.approx(20, abs=1), got
    assert got["interactive/b"] == pytest.approx(20, abs=1), got
    assert got["interactive/c"] == pytest.approx(40, abs=1), got


def test_a_tenant_over_its_own_cap_waits_alone(scheduler: FairScheduler, key_prefix: str) -> None:
    """Tenant "hog" has 200 items and a cap of 4/s; nine others have 5 each. The group
    (100/s) serves the others at once and never holds a gap for the hog's far slots."""
    base = {"requests": "100/s"}
    hog = full("iso", {**base, "tenant.hog.requests": "4/s"})
    push = scheduler.push(
        hog,
        QueuedItem(
            "h0", {"requests": 1, "tenant.hog.requests": 1}, "interactive", "hog", 1.0, 0, "hog"
        ),
    )
    released = [r.payload for r in push.released]
    for n in range(1, 200):
        costs = {"requests": 1, "tenant.hog.requests": 1}
        push = scheduler.push(hog, QueuedItem(f"h{n}", costs, "interactive", "hog", 1.0, 0, "hog"))
        released += [r.payload for r in push.released]
    for t in range(9):
        name = f"t{t}"
        other = full("iso", {**base, f"tenant.{name}.requests": "10/s"})
        for n in range(5):
            costs = {"requests": 1, f"tenant.{name}.requests": 1}
            push = scheduler.push(
                other, QueuedItem(f"{name}.{n}", costs, "interactive", name, 1.0, 0, name)
            )
            released += [r.payload for r in push.released]
    others = [p for p in released if p != "hog"]
    assert released.count("hog") <= 5, "the hog is held to its own cap"
    assert len(others) == 45, "everyone else within its share starts at once"


def test_a_far_slot_set_by_a_tenant_cap_is_not_reserved_at_admission(
    scheduler: FairScheduler,
) -> None:
    """A worker's admission may sleep on a slot within its hold horizon, but not on one
    that only its tenant's cap puts there: reserving it would move the group's own
    schedule (its TAT) to that slot, and the capacity before it would be lost to every
    other tenant. A slot the group's own limit sets is still reserved."""
    limiter = scheduler.limiter
    hog = full("far", {"requests": "100/s", "tenant.hog.requests": "2/s"})
    costs = {"requests": 1, "tenant.hog.requests": 1}
    bounded = {"max_wait_s": 5.0, "tenant_max_wait_s": 0.05}

    def group_tat_us() -> int:
        return int(limiter.client.hget(limiter.keys.state("far"), "t:requests") or 0)

    assert all(limiter.admit(hog, costs, **bounded).reserved for _ in range(2))
    before = group_tat_us()
    held = limiter.admit(hog, costs, **bounded)
    assert not held.reserved and held.binding == "tenant.hog.requests"
    assert 0.3 < held.wait_s <= 0.5, "the tenant's next slot, one emission away"
    assert group_tat_us() == before, "nothing reserved, nothing moved"
    unbounded = limiter.admit(hog, costs, max_wait_s=5.0)
    assert unbounded.reserved
    assert group_tat_us() >= before + 0.3e6, "without the bound the group moves to it"
    group_bound = full("far-group", {"requests": "2/s"})
    assert [limiter.admit(group_bound, {"requests": 1}, **bounded).reserved for _ in range(3)] == [
        True
    ] * 3, "slots the group's own limit sets are reserved (and slept on) as before"


def test_a_lower_lane_gets_its_minimum_share(scheduler: FairScheduler) -> None:
    group = saturated("lanes")
    early: list[str] = []
    for n in range(100):
        for one in (item(f"i{n}", "web"), item(f"b{n}", "etl", lane="batch")):
            last = scheduler.push(group, one)
            early += [r.payload for r in last.released]
    got = collections.Counter((early + drain(scheduler, group, 50, last))[:50])
    assert got["batch/etl"] == pytest.approx(10, abs=1), got  # min share 0.2
    assert got["interactive/web"] == pytest.approx(40, abs=1), got


def test_expired_items_are_released_without_a_reservation(scheduler: FairScheduler) -> None:
    group = saturated("expiry", "1/min")
    now_ms = scheduler.limiter.server_time_ms()
    done = scheduler.push(
        group, QueuedItem("x", {"requests": 1}, "interactive", "a", 1.0, now_ms - 1, "late")
    )
    assert [(r.payload, r.reservation, r.reason, r.own) for r in done.released] == [
        ("late", None, "expired", True)
    ]


def test_an_item_pushed_again_while_queued_stays_one_item(scheduler: FairScheduler) -> None:
    """A worker killed after pushing a task's item but before acknowledging its message
    gets that message delivered again, and the new worker pushes the same item."""
    group = saturated("again", "1/min")
    for _ in range(2):
        assert scheduler.push(group, item("x", "a")).released == ()
    assert scheduler.queued("again") == (1, 1)
    assert scheduler.push(group, item("y", "a")).released == ()
    assert scheduler.queued("again") == (2, 2)


def test_a_cost_no_bucket_holds_fails_at_once(scheduler: FairScheduler) -> None:
    group = saturated("huge", "10/min")
    with pytest.raises(CostExceedsCapacityError):
        scheduler.push(group, QueuedItem("x", {"requests": 11}, "interactive", None, 1.0, 0, ""))
    assert scheduler.queued("huge") == (0, 0)


def test_a_released_item_holds_a_reservation_the_limiter_can_settle(
    scheduler: FairScheduler,
) -> None:
    group = dataclasses.replace(
        LimitGroup.from_specs("settle", {"requests": "10/s"}, concurrency=1), cold_start=1.0
    )
    first = scheduler.push(group, item("one", "a"))
    assert [r.own for r in first.released] == [True] and first.released[0].lease
    second = scheduler.push(group, item("two", "a"))
    assert second.released == (), "the one lease is held"
    assert scheduler.queued("settle") == (1, 1)
    reservation = first.released[0].reservation
    assert reservation is not None
    assert scheduler.limiter.settle(group, reservation) is not None
    assert scheduler.wait_for_wake(["settle"], 1.0) == "settle", "the freed lease wakes"
    again = scheduler.run_pass(group)
    assert [r.item_id for r in again.released] == ["two"] and again.released[0].lease
    assert scheduler.queued("settle") == (0, 0)


def test_a_refund_wakes_a_dispatcher_while_work_waits(scheduler: FairScheduler) -> None:
    """A settle that gives tokens back (reserved max_tokens, less used) lets queued work
    start sooner than the last pass said: it wakes a dispatcher, as a freed lease does."""
    group = full("refund", {"tokens": "1000/s"})
    first = scheduler.push(group, QueuedItem("a", {"tokens": 1000}, "interactive", "t", 1, 0, "a"))
    [own] = first.released
    assert (
        scheduler.push(
            group, QueuedItem("b", {"tokens": 500}, "interactive", "t", 1, 0, "b")
        ).released
        == ()
    )
    assert scheduler.wait_for_wake(["refund"], 0.3) == "refund", "the push's own wake"
    assert scheduler.wait_for_wake(["refund"], 0.3) is None, "nothing to wake for now"
    assert own.reservation is not None
    assert scheduler.limiter.settle(group, own.reservation, {"tokens": -800}) is not None
    assert scheduler.wait_for_wake(["refund"], 1.0) == "refund", "the refund wakes"
    assert [r.item_id for r in scheduler.run_pass(group).released] == ["b"]


def test_a_refund_where_nothing_binds_wakes_no_one(scheduler: FairScheduler) -> None:
    """Tokens given back while the requests bucket holds the queue back cannot bring the
    next pass forward: the settle wakes no dispatcher (every such wake was a pass that
    released nothing, once per completion of a backlog)."""
    group = full("quiet", {"requests": "1/min", "tokens": "1000/s"})
    first = scheduler.push(
        group, QueuedItem("a", {"requests": 1, "tokens": 900}, "interactive", "t", 1, 0, "a")
    )
    [own] = first.released
    waiting = QueuedItem("b", {"requests": 1, "tokens": 100}, "interactive", "t", 1, 0, "b")
    assert scheduler.push(group, waiting).released == ()
    assert scheduler.wait_for_wake(["quiet"], 0.3) == "quiet", "the push's own wake"
    assert own.reservation is not None
    assert scheduler.limiter.settle(group, own.reservation, {"tokens": -800}) is not None
    assert scheduler.wait_for_wake(["quiet"], 0.5) is None, "requests still bind"
    assert scheduler.queued("quiet") == (1, 1)


def test_pushes_behind_a_saturated_backlog_queue_without_a_pass(
    scheduler: FairScheduler, redis_client: redis.Redis
) -> None:
    """Behind a group saturated past the release lead, a push into a flow that holds
    work only appends and counts it (enqueue.lua, no pass); a new flow, or the same
    item pushed again, is handled as schedule.lua handles it."""
    group = saturated("behind", "2/s")
    first = scheduler.push(group, item("a0", "a"))
    assert first.released == () and first.due_in_s is not None
    calls = command_calls(redis_client, "rpushx")
    for n in range(1, 6):
        done = scheduler.push(group, item(f"a{n}", "a"))
        assert done.released == () and done.due_ms == first.due_ms
    again = scheduler.push(group, item("a3", "a"))
    assert again.released == () and scheduler.queued("behind") == (6, 6)
    assert command_calls(redis_client, "rpushx") - calls == 5
    scheduler.push(group, item("b0", "b"))  # a new flow: made ready by a whole push
    assert scheduler.queued("behind") == (7, 7)
    assert scheduler.limiter.start_wait_s(group, {"requests": 1})[1] == 7
    released = drain(scheduler, group, 2, scheduler.run_pass(group))
    assert sorted(released[:2]) == ["interactive/a", "interactive/b"], "fair between the two"


def test_the_queue_length_a_start_read_sees_is_the_queues(scheduler: FairScheduler) -> None:
    """The state's 'b' follows every push and release: a choice among credentials (the
    shortest fair queue) and the gateway's backpressure read it as the queue's length
    (it was written only when work appeared or went, and once a second)."""
    group = saturated("length", "10/s")
    limiter = scheduler.limiter
    for n in range(1, 6):
        scheduler.push(group, item(f"i{n}", "a"))
        assert limiter.start_wait_s(group, {"requests": 1}) == (math.inf, n)
    released = drain(scheduler, group, 2, scheduler.run_pass(group))
    assert len(released) >= 2
    assert limiter.start_wait_s(group, {"requests": 1})[1] == 5 - len(released)


def test_ten_thousand_tenants_leave_nothing_behind(
    scheduler: FairScheduler, redis_client: redis.Redis, key_prefix: str
) -> None:
    """10,000 distinct tenants, one request each, every tenant with its own cap: all
    are released without error; once their buckets are full again, the passes that
    follow sweep them away, and every key left has an expiry."""
    base = {"requests": "100000/s"}
    released = 0
    for n in range(10_000):
        tenant = f"tenant-{n}.example.com"
        group = full("many", {**base, f"tenant.{tenant}.requests": "1/s"})
        costs = {"requests": 1, f"tenant.{tenant}.requests": 1}
        done = scheduler.push(group, QueuedItem(f"i{n}", costs, "interactive", tenant, 1.0, 0, "p"))
        released += len(done.released)
    assert released == 10_000
    assert scheduler.queued("many") == (0, 0)
    state_key = KeyBuilder(key_prefix).state("many")
    # the buckets of the last second's tenants are not full again yet: they are kept
    tenant_fields = [f for f in redis_client.hkeys(state_key) if f.startswith(b"t:tenant.")]
    assert b"t:tenant.tenant-9999.example.com.requests" in tenant_fields
    time.sleep(1.1)  # every tenant bucket is full again
    group = full("many", base)
    # A sweep starts once a second and takes 64 hash buckets per pass until it is done.
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        scheduler.run_pass(group)
        left = [f for f in redis_client.hkeys(state_key) if f.startswith(b"t:tenant.")]
        if not left:
            break
        time.sleep(0.005)
    assert left == [], f"{len(left)} idle tenants' buckets left"
    keys = keys_matching(redis_client, f"{key_prefix}*")
    assert len(keys) < 20, keys
    assert {k: redis_client.pttl(k) for k in keys if redis_client.pttl(k) <= 0} == {}


def test_a_cancel_of_what_binds_wakes_a_dispatcher(scheduler: FairScheduler) -> None:
    """A reservation given back where the group is saturated (its requests bucket) lets
    the next item go at once: the cancel wakes a dispatcher, whose pass releases it."""
    group = full("cancelled", {"requests": "1/min"})
    [own] = scheduler.push(group, item("a", "t")).released
    assert scheduler.push(group, item("b", "t")).released == ()
    assert scheduler.wait_for_wake(["cancelled"], 0.3) == "cancelled", "the push's own wake"
    assert scheduler.wait_for_wake(["cancelled"], 0.3) is None
    assert own.reservation is not None
    assert scheduler.limiter.cancel(group, own.reservation) is not None
    assert scheduler.wait_for_wake(["cancelled"], 0.5) == "cancelled"
    released = scheduler.run_pass(group).released
    assert [r.item_id for r in released] == ["b"]

"""The Redis limiter against a real redis-server: slots, FIFO, cancel, settle, pause."""

from __future__ import annotations

import itertools
import threading
import time

import pytest
import redis
from conftest import keys_matching
from redis.backoff import NoBackoff
from redis.retry import Retry

from throttle.errors import CostExceedsCapacityError, ReservationHandleError, StorageError
from throttle.keys import KeyBuilder
from throttle.limiter import PLAN_CACHE_SIZE, BeginOutcome, RedisLimiter
from throttle.limits import Algorithm, Dimension, LimitGroup
from throttle.model import LimiterModel

pytestmark = pytest.mark.integration


@pytest.fixture
def limiter(redis_client: redis.Redis, key_prefix: str) -> RedisLimiter:
    return RedisLimiter(redis_client, keys=KeyBuilder(key_prefix))


def saturate(
    limiter: RedisLimiter, group: LimitGroup, costs: dict[str, float], backlog_s: float = 0.0
) -> None:
    """Admit until the next slot is more than ``backlog_s`` in the future."""
    while limiter.admit(group, costs).wait_s <= backlog_s:
        pass


def test_fifo_slots_for_fifty_concurrent_waiters(limiter: RedisLimiter) -> None:
    group = LimitGroup.from_specs("fifo", {"requests": "20/s", "tokens": "100k/s"})
    saturate(limiter, group, {"requests": 1}, backlog_s=1.0)  # immune to a stalled machine
    barrier = threading.Barrier(50)
    results = []
    lock = threading.Lock()

    def waiter() -> None:
        barrier.wait()
        admission = limiter.admit(group, {"requests": 1, "tokens": 10})
        with lock:
            results.append(admission)

    threads = [threading.Thread(target=waiter) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    by_arrival = sorted(results, key=lambda a: a.now_ms)
    slots = [a.slot_ms for a in by_arrival]
    assert all(a.wait_s > 0 and a.reserved for a in results)
    assert len(set(slots)) == 50
    assert slots == sorted(slots), "slots must follow arrival order"
    gaps = [later - earlier for earlier, later in itertools.pairwise(slots)]
    assert gaps == pytest.approx([50.0] * 49, abs=0.002)


def test_admission_matches_the_model_operation_by_operation(limiter: RedisLimiter) -> None:
    group = LimitGroup(
        "mixed",
        (
            Dimension.parse("requests", "5/s"),
            Dimension.parse("tokens", "1000/2s"),
            Dimension("window", 800, 1.0, Algorithm.SLIDING),
        ),
        headroom=0.05,
    )
    model = LimiterModel()
    costs = [(1, 300, 200), (1, 500, 300), (1, 200, 400), (1, 100, 100), (1, 700, 50), (1, 0, 0)]
    for i, (requests, tokens, window) in enumerate(costs):
        vector = {"requests": requests, "tokens": tokens, "window": window}
        got = limiter.admit(group, vector, reservation_id=f"r{i}")
        want = model.admit(group, vector, f"r{i}", now_ms=got.now_ms)
        assert got.wait_s * 1000 == pytest.approx(want.wait_ms, abs=0.01)
        assert got.binding == want.binding


def test_cancel_and_settle_restore_what_the_model_says(limiter: RedisLimiter) -> None:
    group = LimitGroup.from_specs("refund", {"requests": "10/s", "tokens": "1000/s"})
    model = LimiterModel()

    def both_admit(rid: str, tokens: float) -> str:
        got = limiter.admit(group, {"requests": 1, "tokens": tokens}, reservation_id=rid)
        model.admit(group, {"requests": 1, "tokens": tokens}, rid, now_ms=got.now_ms)
        assert got.reservation_id == rid
        return got.reservation

    a, b = both_admit("a", 600), both_admit("b", 600)
    cancelled_at = limiter.cancel(group, a)
    assert cancelled_at is not None
    model.cancel(group, "a", now_ms=cancelled_at)
    settled = limiter.settle(group, b, {"tokens": 300})
    assert settled is not None
    model.settle(group, "b", {"tokens": 300}, now_ms=settled.now_ms)
    assert limiter.cancel(group, a) is None, "a second cancel must not refund again"
    assert limiter.settle(group, b, {"tokens": -900}) is None, "a second settle is ignored"
    assert limiter.cancel(group, "b") is None, "a handle without its record finishes nothing"
    probe = limiter.admit(group, {"tokens": 500})
    expected = model.admit(group, {"tokens": 500}, "probe", now_ms=probe.now_ms)
    assert probe.wait_s * 1000 == pytest.approx(expected.wait_ms, abs=0.01)


def test_admission_keeps_nothing_per_reservation_and_each_is_finished_once(
    redis_client: redis.Redis, key_prefix: str
) -> None:
    limiter = RedisLimiter(redis_client, keys=KeyBuilder(key_prefix), record_ttl_s=0.3)
    group = LimitGroup.from_specs("handles", {"requests": "100/s", "tokens": "10k/s"})
    first, second, third = (limiter.admit(group, {"requests": 1, "tokens": 10}) for _ in range(3))
    assert keys_matching(redis_client, f"{key_prefix}:*") == [
        KeyBuilder(key_prefix).state("handles").encode()
    ]
    assert limiter.settle(group, first.reservation) is not None
    assert limiter.settle(group, first.reservation) is None
    assert limiter.cancel(group, first.reservation) is None, "settled: nothing to give back"
    (marker,) = keys_matching(redis_client, f"{key_prefix}:*:done:*")
    assert 0 < redis_client.pttl(marker) <= 300, "the marker lives until the record expires"
    with pytest.raises(ReservationHandleError, match="not a reservation handle"):
        limiter.cancel(group, second.reservation.rsplit("|", 1)[0])
    assert limiter.cancel(group, second.reservation_id) is None, "a bare id finishes nothing"
    for bad in ("a/b", "a|b", "a,b", ""):
        with pytest.raises(ReservationHandleError, match="must be non-empty, without"):
            limiter.admit(group, {"requests": 1}, reservation_id=bad)
    time.sleep(0.35)
    assert limiter.cancel(group, third.reservation) is None, "past its expiry it is kept"


def test_a_handle_finishes_only_its_own_group_and_ids_can_be_used_again(
    limiter: RedisLimiter,
) -> None:
    a = LimitGroup.from_specs("group-a", {"requests": "10/s"})
    b = LimitGroup.from_specs("group-b", {"requests": "10/s"})
    of_a = limiter.admit(a, {"requests": 1}, reservation_id="task-1")
    with pytest.raises(ReservationHandleError, match="not a reservation handle"):
        limiter.cancel(b, of_a.reservation)
    assert limiter.cancel(a, of_a.reservation) is not None
    again = limiter.admit(a, {"requests": 1}, reservation_id="task-1")
    assert limiter.settle(a, again.reservation) is not None, "a finished id can be used again"


def test_a_record_that_does_not_fit_is_refused_before_anything_is_written(
    limiter: RedisLimiter, redis_client: redis.Redis
) -> None:
    group = LimitGroup(
        "fits",
        (Dimension.parse("requests", "10/s"), Dimension("log", 10, 60.0, Algorithm.SLIDING)),
        concurrency=2,
    )
    admission = limiter.admit(group, {"requests": 1, "log": 1})
    state = limiter.keys.state("fits")
    before = redis_client.hgetall(state)
    member_cut = admission.reservation.rsplit(",", 1)[0] + ","  # the log entry lost its member
    for bad in (member_cut, admission.reservation.replace("|1,", "|1,,", 1)):
        with pytest.raises(ReservationHandleError, match="malformed reservation record"):
            limiter.cancel(group, bad)
    assert redis_client.hgetall(state) == before, "nothing given back"
    assert limiter.cancel(group, admission.reservation) is not None, "the real handle still works"
    assert redis_client.zcard(limiter.keys.dimension("fits", "log")) == 0
    assert redis_client.zcard(limiter.keys.leases("fits")) == 0


def test_the_state_outlives_every_debt_and_sliding_window_it_holds(
    limiter: RedisLimiter, redis_client: redis.Redis
) -> None:
    windowed = LimitGroup(
        "long-window",
        (Dimension.parse("requests", "100/s"), Dimension("hour", 1000, 3600.0, Algorithm.SLIDING)),
    )
    limiter.admit(windowed, {"requests": 1, "hour": 5})
    assert redis_client.pttl(limiter.keys.state("long-window")) > 3_600_000, "the sum lives on"
    tokens = LimitGroup.from_specs("debt", {"tokens": "1000/min"})
    admission = limiter.admit(tokens, {"tokens": 100})
    assert limiter.settle(tokens, admission.reservation, {"tokens": 4900}) is not None
    assert redis_client.pttl(limiter.keys.state("debt")) > 300_000, "5 min of debt is kept"
    # a settle extends the state's expiry only when its record of it ('x') is too near,
    # and never shortens what a pause set (an hour here, past every TAT)
    admission = limiter.admit(tokens, {"tokens": 100})
    limiter.pause(tokens, 3600)
    redis_client.hset(limiter.keys.state("debt"), "x", 0)
    assert limiter.settle(tokens, admission.reservation, {"tokens": 10}) is not None
    assert redis_client.pttl(limiter.keys.state("debt")) > 3_600_000, "the pause is kept"


def test_a_sliding_log_is_used_whole_and_keeps_entries_a_wire_margin_longer(
    limiter: RedisLimiter,
) -> None:
    """Headroom keeps a GCRA burst unused; a sliding log has no burst apart from its
    rate, so all of it is used, and each entry stays the wire margin past its window."""
    log = Dimension("tokens", 100, 1.0, Algorithm.SLIDING)
    group = LimitGroup("rolling", (log,), headroom=0.25, wire_margin_s=0.05)
    first = limiter.admit(group, {"tokens": 60})
    assert limiter.admit(group, {"tokens": 40}).wait_s == 0, "all 100, not 75"
    third = limiter.admit(group, {"tokens": 10})
    assert third.slot_ms - first.slot_ms == pytest.approx(1050, abs=1)
    assert LimitGroup("default", (log,)).window_ms(log) == pytest.approx(1050)
    ten = Dimension("requests", 300, 10.0, Algorithm.SLIDING)
    assert LimitGroup("default", (ten,)).window_ms(ten) == pytest.approx(10_200)
    minute = Dimension("tokens", 100, 60.0, Algorithm.SLIDING)
    assert LimitGroup("default", (minute,)).window_ms(minute) == pytest.approx(60_250)


def test_a_late_start_moves_its_sliding_entry_to_when_it_leaves(
    limiter: RedisLimiter, redis_client: redis.Redis
) -> None:
    """The provider counts a request from its arrival: a task that starts after its
    slot (it waited for a free worker thread) has its entry moved to its start, and
    one that starts so late that the log has moved on waits for room."""
    log = Dimension("requests", 2, 1.0, Algorithm.SLIDING)
    group = LimitGroup("late", (log,), wire_margin_s=0.0)
    key = limiter.keys.dimension("late", "requests")
    first, second = (limiter.admit(group, {"requests": 1}) for _ in range(2))
    time.sleep(0.3)
    begun = limiter.begin(group, first.reservation)
    assert begun.outcome is BeginOutcome.GO
    scores = dict(redis_client.zrange(key, 0, -1, withscores=True))
    moved = (
        scores[f"{first.reservation_id}:1".encode()] - scores[f"{second.reservation_id}:1".encode()]
    )
    assert moved == pytest.approx(300, abs=100)
    # a whole window later two others fill the log; the second starts only now
    time.sleep(1.4 - 0.3)
    third = limiter.admit(group, {"requests": 1})
    limiter.admit(group, {"requests": 1})
    assert third.wait_s == 0
    late = limiter.begin(group, second.reservation)
    assert late.outcome is BeginOutcome.WINDOW_FULL
    assert late.wait_s == pytest.approx((third.slot_ms + 1000 - late.now_ms) / 1000, abs=0.01)


def test_a_429_lowers_a_sliding_log_as_it_lowers_a_bucket(limiter: RedisLimiter) -> None:
    group = LimitGroup("rolling-429", (Dimension("tokens", 100, 1.0, Algorithm.SLIDING),))
    assert limiter.pause(group, 0.0, rate_limited=True).multiplier == pytest.approx(0.6)
    first = limiter.admit(group, {"tokens": 60})
    assert first.wait_s == 0
    later = limiter.admit(group, {"tokens": 1})
    assert later.binding == "tokens", "60 of 100 is all the log takes at 0.6"
    assert later.slot_ms - first.slot_ms == pytest.approx(1050, abs=1)


def test_cost_above_capacity_raises_before_and_inside_redis(limiter: RedisLimiter) -> None:
    group = LimitGroup.from_specs("big", {"tokens": "1000/min"}, headroom=0.1)
    with pytest.raises(CostExceedsCapacityError) as info:
        limiter.admit(group, {"tokens": 950})
    assert info.value.capacity == pytest.approx(900)
    assert limiter.admit(group, {"tokens": 900}).wait_s == 0


def test_pause_gate_holds_new_slots_and_sends_old_ones_back(limiter: RedisLimiter) -> None:
    group = LimitGroup.from_specs("paused", {"requests": "2/s"})
    saturate(limiter, group, {"requests": 1})
    earlier = limiter.admit(group, {"requests": 1})
    assert limiter.pause(group, 5.0).wait_s == pytest.approx(5.0, abs=0.01)
    assert limiter.pause(group, 1.0).wait_s == pytest.approx(5.0, abs=0.05), "never shortened"
    later = limiter.admit(group, {"requests": 1})
    assert later.binding == "pause"
    assert later.wait_s == pytest.approx(5.0, abs=0.05)
    begin = limiter.begin(group, earlier.reservation)
    assert begin.outcome is BeginOutcome.PAUSED
    assert begin.wait_s == pytest.approx(5.0, abs=0.05)


def test_a_pause_that_ends_before_the_slot_lets_it_go(limiter: RedisLimiter) -> None:
    """Without sliding logs or a cap, begin reads the gate alone: a pause made after the
    reservation but over by its slot lets it go; one that reaches past it sends it back
    (on the server's clock, the script's answer, with the wait)."""
    group = LimitGroup.from_specs("gate", {"requests": "2/s"})
    saturate(limiter, group, {"requests": 1}, backlog_s=1.0)
    later = limiter.admit(group, {"requests": 1})
    assert later.wait_s > 1.0
    limiter.pause(group, 0.3)
    assert limiter.begin(group, later.reservation).outcome is BeginOutcome.GO
    nearer = limiter.admit(group, {"requests": 1})  # its slot is after the pause's end
    limiter.pause(group, nearer.wait_s + 1.0)
    begin = limiter.begin(group, nearer.reservation)
    assert begin.outcome is BeginOutcome.PAUSED
    assert begin.wait_s == pytest.approx(nearer.wait_s + 1.0, abs=0.1)


def test_concurrency_leases_are_capped_released_and_expire(limiter: RedisLimiter) -> None:
    group = LimitGroup.from_specs("conc", {"requests": "1000/s"}, concurrency=2, lease_ttl_s=0.3)
    first, second, third = (limiter.admit(group, {"requests": 1}) for _ in range(3))
    assert (first.lease, second.lease, third.lease) == (True, True, False)
    assert limiter.begin(group, third.reservation).outcome is BeginOutcome.BUSY
    assert limiter.settle(group, first.reservation)
    assert limiter.begin(group, third.reservation).outcome is BeginOutcome.GO
    assert (
        limiter.begin(group, limiter.admit(group, {"requests": 1}).reservation).outcome
        is BeginOutcome.BUSY
    )
    time.sleep(0.35)  # leases of a crashed worker come back by themselves
    assert (
        limiter.begin(group, limiter.admit(group, {"requests": 1}).reservation).outcome
        is BeginOutcome.GO
    )


def test_every_key_of_a_group_shares_one_hash_tag(
    limiter: RedisLimiter, redis_client: redis.Redis, key_prefix: str
) -> None:
    group = LimitGroup(
        "openai:gpt-4o",
        (
            Dimension.parse("tokens", "1000/s"),
            Dimension("log", 10, 1.0, Algorithm.SLIDING),
            Dimension.parse("day", "100/day @ America/Los_Angeles"),
        ),
        concurrency=4,
    )
    first, _ = (limiter.admit(group, {"tokens": 1, "log": 1, "day": 1}) for _ in range(2))
    assert limiter.settle(group, first.reservation) is not None  # writes its marker
    keys = [k.decode() for k in keys_matching(redis_client, f"{key_prefix}:*")]
    assert len(keys) >= 5
    assert all(k.startswith(f"{key_prefix}:{{openai:gpt-4o}}:") for k in keys)
    assert all(redis_client.pttl(k) > 0 for k in keys), "every key must expire"


def test_unreachable_redis_is_a_storage_error() -> None:
    client = redis.Redis(
        host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0)
    )
    limiter = RedisLimiter(client)
    with pytest.raises(StorageError, match="admission"):
        limiter.admit(LimitGroup.from_specs("g", {"r": "1/s"}), {"r": 1})


def test_a_bounded_admission_joins_a_fair_queue_that_holds_work(
    limiter: RedisLimiter, redis_client: redis.Redis, key_prefix: str
) -> None:
    """While the group's fair queue holds work ('b' > 0), an admission bounded by a
    max wait reserves nothing and says so, however free the buckets are; an unbounded
    one is still served, and the state it read is untouched by the refusal."""
    group = LimitGroup.from_specs("queued", {"requests": "20/s", "tokens": "100k/s"})
    state_key = KeyBuilder(key_prefix).state("queued")
    assert limiter.admit(group, {"requests": 1}, max_wait_s=1.0).reserved
    before = redis_client.hgetall(state_key)
    redis_client.hset(state_key, "b", 3)
    refused = limiter.admit(group, {"requests": 1}, max_wait_s=1.0)
    assert (refused.reserved, refused.binding, refused.wait_s) == (False, "queue", 0.0)
    assert redis_client.hgetall(state_key) == {**before, b"b": b"3"}
    assert limiter.admit(group, {"requests": 1}).reserved
    redis_client.hset(state_key, "b", 0)
    assert limiter.admit(group, {"requests": 1}, max_wait_s=1.0).reserved


def test_plans_of_idle_groups_are_dropped(limiter: RedisLimiter) -> None:
    """One plan per tenant's group: the cache stays bounded, and a group planned again
    after it was dropped admits as before."""
    first = LimitGroup.from_specs("tenant-0", {"requests": "20/s"})
    assert limiter.admit(first, {"requests": 1}).reserved
    for n in range(1, 3 * PLAN_CACHE_SIZE):
        limiter._plan(LimitGroup.from_specs(f"tenant-{n}", {"requests": "20/s"}))
    assert len(limiter._plans) <= PLAN_CACHE_SIZE
    assert id(first) not in limiter._plans
    assert limiter.admit(first, {"requests": 1}).reserved

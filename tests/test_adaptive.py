"""The adaptive rate controller: AIMD on 429s, header sync, learned capacity.

Pure rules on the model (injected clock, no sleeping), the herd rule on a real Redis,
and the scenarios of issue 5 end to end: real workers, the emulator changing its
limits without notice, compressed to 1-second windows.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import pytest
import redis

from testing.emulator import (
    EmulatorConfig,
    FaultConfig,
    FaultKind,
    LatencyConfig,
    PoolConfig,
    Profile,
    parse_limits_text,
)
from testing.harness import COMPRESSED_HEADROOM, LocalStack
from throttle.errors import CostExceedsCapacityError
from throttle.keys import KeyBuilder
from throttle.limiter import EPOCH_MS, Observed, RedisLimiter
from throttle.limits import Dimension, LimitGroup
from throttle.model import LimiterModel
from throttle.parking import ParkingLot
from throttle.providers.observation import DimensionState, Observation
from workers.runtime import observed_dimensions

T0 = 1_800_000_000_000.0


def group(**kwargs: Any) -> LimitGroup:
    return LimitGroup.from_specs("g", {"requests": "10/s", "tokens": "1000/s"}, **kwargs)


# -- rules, on the model ----------------------------------------------------------------


def test_a_429_lowers_the_rate_once_per_epoch() -> None:
    model, g = LimiterModel(), group()
    model.pause(g, 1000, rate_limited=True, now_ms=T0)
    # The epoch: until the pause is over (T0 + 1 s) and one clean window (1 s) more.
    for at in (T0 + 10, T0 + 1500, T0 + 1999):
        model.pause(g, 1000, rate_limited=True, now_ms=at)
    assert model.multiplier(g) == pytest.approx(0.6), "one signal"
    model.pause(g, 1000, rate_limited=True, now_ms=T0 + 3600)  # past the epoch
    assert model.multiplier(g) == pytest.approx(0.36)
    model.pause(g, 1000, now_ms=T0 + 9000)  # a manual pause never lowers the rate
    assert model.multiplier(g) == pytest.approx(0.36)


def test_lowered_rate_spaces_slots_wider() -> None:
    model, g = LimiterModel(), group()
    model.pause(g, 0, rate_limited=True, now_ms=T0)
    slots = [model.admit(g, {"requests": 1}, f"r{i}", now_ms=T0).slot_ms for i in range(9)]
    gaps = {round(b - a, 1) for a, b in itertools.pairwise(slots[6:])}
    assert gaps == {round(1000 / 6, 1)}, "10/s x 0.6 = one request per 166.7 ms"


def test_clean_windows_raise_the_multiplier_back_to_one() -> None:
    model, g = LimiterModel(), group()
    model.pause(g, 0, rate_limited=True, now_ms=T0)
    now = T0
    seen = []
    for step in range(8):
        now += 1000  # one clean window (the shortest period) each time
        model.admit(g, {"requests": 1}, f"r{step}", now_ms=now)
        model.settle(g, f"r{step}", {}, now_ms=now)
        seen.append(round(model.multiplier(g), 2))
    assert seen == [0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0], "+0.05 per clean window"


def test_headers_clamp_the_bucket_and_teach_the_limit() -> None:
    model, g = LimiterModel(), group()
    model.admit(g, {"requests": 1}, "a", now_ms=T0)
    # The provider says only 2 of its 5 requests/s remain (others share the quota).
    model.settle(g, "a", {}, observed={"requests": (2, 5, 0)}, now_ms=T0)
    assert model.level(g, "requests", now_ms=T0) == pytest.approx(2)
    slots = [model.admit(g, {"requests": 1}, f"r{i}", now_ms=T0).slot_ms for i in range(4)]
    assert [s - T0 for s in slots] == pytest.approx([0, 0, 200, 400]), "learned 5/s"


def test_learned_capacity_never_exceeds_the_configuration() -> None:
    model, g = LimiterModel(), group()
    model.admit(g, {"requests": 1}, "a", now_ms=T0)
    model.settle(g, "a", {}, observed={"requests": (None, 50, 0)}, now_ms=T0)
    slots = [model.admit(g, {"requests": 1}, f"r{i}", now_ms=T0).slot_ms for i in range(12)]
    assert slots[-1] - slots[-2] == pytest.approx(100), "still 10/s, as configured"


def auto_group() -> LimitGroup:
    """Requests as an ``auto`` limit starting at 2/s; tokens configured."""
    return LimitGroup(
        "auto", (Dimension("requests", 2, 1.0, auto=True), Dimension.parse("tokens", "1000/s"))
    )


def test_auto_limits_follow_the_learned_limit_above_their_start() -> None:
    model, g = LimiterModel(), auto_group()
    model.admit(g, {"requests": 1}, "a", now_ms=T0)
    model.settle(g, "a", {}, observed={"requests": (49, 50, 0)}, now_ms=T0)
    slots = [model.admit(g, {"requests": 1}, f"r{i}", now_ms=T0).slot_ms for i in range(60)]
    assert slots[-1] - slots[-2] == pytest.approx(20), "50/s as heard, not the 2/s start"
    # Learned limits are never exceeded: clean windows do not push the multiplier on.
    model.settle(g, "r0", {}, now_ms=T0 + 5000)
    assert model.multiplier(g) == 1.0


def test_auto_limits_without_headers_double_until_a_429_then_creep() -> None:
    model, g = LimiterModel(), auto_group()
    now, seen = T0, []
    for step in range(5):
        now += 1000
        model.admit(g, {"requests": 1}, f"r{step}", now_ms=now)
        model.settle(g, f"r{step}", {}, now_ms=now)
        seen.append(model.multiplier(g))
    # The first settle starts the clock; then discovery doubles per clean window.
    assert seen == [1, 2, 4, 8, 16], "slow start"
    model.pause(g, 1000, rate_limited=True, now_ms=now)
    assert model.multiplier(g) == pytest.approx(16 * 0.6)
    now += 3000  # the pause and its epoch are over
    model.admit(g, {"requests": 1}, "after", now_ms=now)
    model.settle(g, "after", {}, now_ms=now)
    assert model.multiplier(g) == pytest.approx(16 * 0.6 * 1.05), "then +5% per clean window"


@pytest.mark.integration
def test_auto_limits_on_redis_follow_headers(redis_url: str, key_prefix: str) -> None:
    limiter = RedisLimiter(redis.Redis.from_url(redis_url), keys=KeyBuilder(key_prefix))
    g = auto_group()
    first = limiter.admit(g, {"requests": 1, "tokens": 10})
    with pytest.raises(CostExceedsCapacityError):  # configured dimensions still fail fast
        limiter.admit(g, {"tokens": 5000})
    limiter.settle(g, first.reservation, {}, {"requests": Observed(49, 50)})
    slots = [limiter.admit(g, {"requests": 1}).slot_ms for _ in range(60)]
    assert slots[-1] - slots[-2] == pytest.approx(20, abs=0.01), "50/s as heard"
    # A cost above the start capacity is not refused: the real capacity is unknown.
    assert limiter.admit(g, {"requests": 10}).reserved


@pytest.mark.integration
def test_a_learned_rise_pulls_every_bucket_the_queue_pushed(
    redis_url: str, key_prefix: str
) -> None:
    """Fifty requests queued at an auto start of 1/s push the tokens bucket's TAT 50 s
    ahead too (a slot debits every dimension); learning 20/s must shorten both, or the
    tokens bucket keeps the whole queue waiting on the old schedule."""
    limiter = RedisLimiter(redis.Redis.from_url(redis_url), keys=KeyBuilder(key_prefix))
    g = LimitGroup(
        "rise",
        (Dimension("requests", 1, 1.0, auto=True), Dimension.parse("tokens", "10M/s")),
        headroom=0.05,
        cold_start=0.25,
    )
    model = LimiterModel()
    queued = []
    for i in range(50):
        got = limiter.admit(g, {"requests": 1, "tokens": 30}, reservation_id=f"q{i}")
        model.admit(g, {"requests": 1, "tokens": 30}, f"q{i}", now_ms=got.now_ms)
        queued.append(got)
    assert queued[-1].wait_s > 45, "queued at the start rate"
    heard = {"requests": Observed(19, 20)}
    settled = limiter.settle(g, queued[0].reservation, {}, heard)
    assert settled is not None
    model.settle(g, "q0", {}, observed={"requests": (19, 20, 0)}, now_ms=settled.now_ms)
    after = limiter.admit(g, {"requests": 1, "tokens": 30}, reservation_id="next")
    want = model.admit(g, {"requests": 1, "tokens": 30}, "next", now_ms=after.now_ms)
    assert after.wait_s < 4, "49 queued requests at 20/s, not 50 s of the old schedule"
    assert after.wait_s * 1000 == pytest.approx(want.wait_ms, abs=0.01)


def test_a_bucket_that_does_not_bind_learning_its_limit_moves_no_parked_task(
    redis_url: str, key_prefix: str
) -> None:
    """Requests set the slots (1/s at the auto start); the tokens bucket, only pushed
    along, learns 120 times its start first. The parked queue must stay on the
    requests schedule until the requests limit is heard: moving it by the tokens
    factor released a second's queue in a few ms, a burst the provider refused."""
    client = redis.Redis.from_url(redis_url)
    keys = KeyBuilder(key_prefix)
    limiter, lot = RedisLimiter(client, keys=keys), ParkingLot(client, keys)
    g = LimitGroup(
        "nb",
        (Dimension("requests", 1, 1.0, auto=True), Dimension("tokens", 333, 1.0, auto=True)),
        headroom=0.05,
        cold_start=0.25,
    )
    model = LimiterModel()
    cost = {"requests": 1, "tokens": 20}
    slots, handles = [], []
    for i in range(20):
        got = limiter.admit(g, cost, reservation_id=f"q{i}")
        model.admit(g, cost, f"q{i}", now_ms=got.now_ms)
        slots.append(got.slot_ms)
        handles.append(got.reservation)
    lot.park("nb", "q19.1", slots[19], {})

    def parked_in_ms() -> float:
        score = client.zscore(keys.parked("nb"), "q19.1")
        assert score is not None
        return float(score) + EPOCH_MS - limiter.server_time_ms()

    far = parked_in_ms()
    assert far > 15_000
    tokens_heard = limiter.settle(g, handles[0], {}, {"tokens": Observed(39_980, 40_000)})
    assert tokens_heard is not None
    model.settle(g, "q0", {}, observed={"tokens": (39_980, 40_000, 0)}, now_ms=tokens_heard.now_ms)
    assert parked_in_ms() == pytest.approx(far, abs=200), "requests still set the pace"
    probe = limiter.admit(g, cost, reservation_id="probe")
    want = model.admit(g, cost, "probe", now_ms=probe.now_ms)
    assert probe.wait_s * 1000 == pytest.approx(want.wait_ms, abs=0.01)
    assert probe.wait_s > 15
    requests_heard = limiter.settle(g, handles[1], {}, {"requests": Observed(19, 20)})
    assert requests_heard is not None
    assert parked_in_ms() < far / 10, "now the requests limit is heard, the queue moves"


@pytest.mark.parametrize("give_back", ["cancel", "settle"])
def test_a_reservation_from_before_a_learned_rise_gives_back_one_unit_at_the_new_rate(
    redis_url: str, key_prefix: str, give_back: str
) -> None:
    """A request queued at an auto start of 1/s and given back after 20/s was learned
    (cancelled at a pause, or refunded when the provider refused it) returns one
    request's worth of today's queue (50 ms), not the 1 s it took at admission: the
    rise already shrank its place in the queue. Refunding the old 1 s gave the next 19
    requests a free burst, and the 429s that burst caused gave back more."""
    limiter = RedisLimiter(redis.Redis.from_url(redis_url), keys=KeyBuilder(key_prefix))
    g = LimitGroup(
        "back", (Dimension("requests", 1, 1.0, auto=True),), headroom=0.05, cold_start=0.25
    )
    model = LimiterModel()

    handles: dict[str, str] = {}

    def admit(rid: str) -> float:
        got = limiter.admit(g, {"requests": 1}, reservation_id=rid)
        want = model.admit(g, {"requests": 1}, rid, now_ms=got.now_ms)
        assert got.wait_s * 1000 == pytest.approx(want.wait_ms, abs=0.01)
        handles[rid] = got.reservation
        return got.slot_ms

    for i in range(10):
        admit(f"q{i}")
    settled = limiter.settle(g, handles["q0"], {}, {"requests": Observed(19, 20)})
    assert settled is not None
    model.settle(g, "q0", {}, observed={"requests": (19, 20, 0)}, now_ms=settled.now_ms)
    before = admit("probe")
    probe_ms = limiter.cancel(g, handles["probe"])  # the last one: wound back exactly
    assert probe_ms is not None
    model.cancel(g, "probe", now_ms=probe_ms)
    if give_back == "cancel":
        done_ms = limiter.cancel(g, handles["q5"])
        assert done_ms is not None
        model.cancel(g, "q5", now_ms=done_ms)
    else:
        refunded = limiter.settle(g, handles["q5"], {"requests": -1.0}, {})
        assert refunded is not None
        model.settle(g, "q5", {"requests": -1.0}, now_ms=refunded.now_ms)
    after = admit("next")
    assert before - after == pytest.approx(50.0, abs=2.0)


def test_observed_dimensions_skip_headers_of_another_window() -> None:
    g = LimitGroup.from_specs("g", {"requests": "10/s", "tokens": "1000/min"})
    observation = Observation(
        received_at=0.0,
        dimensions={
            "requests": DimensionState(limit=10, remaining=4, reset_s=0.6),
            # A token bucket that takes a day to fill: the TPD, not our per-minute one.
            "tokens": DimensionState(limit=1_000_000, remaining=1000, reset_s=86_000),
        },
    )
    heard = observed_dimensions(g, observation)
    assert set(heard) == {"requests"}
    assert heard["requests"].remaining == 4
    assert observed_dimensions(g, None) == {}


def test_observed_dimensions_allow_for_the_rounding_of_remaining() -> None:
    """One request used of a 20/s bucket that was at 19.7 before it: the provider says
    19 remain, full again in 15 ms. Taken at face value that is a 0.3 s window, but a
    remaining rounded down fits 1 s too: the limit must be heard from the first response,
    not after several (an auto group waits on it)."""
    g = LimitGroup("g", (Dimension("requests", 1, 1.0, auto=True),))
    first = Observation(
        received_at=0.0,
        dimensions={"requests": DimensionState(limit=20, remaining=19, reset_s=0.015)},
    )
    assert set(observed_dimensions(g, first)) == {"requests"}


# -- the herd rule, on Redis -----------------------------------------------------------


@pytest.mark.integration
def test_sixty_four_simultaneous_429s_are_one_decrease(redis_url: str, key_prefix: str) -> None:
    limiter = RedisLimiter(redis.Redis.from_url(redis_url), keys=KeyBuilder(key_prefix))
    g = LimitGroup.from_specs("herd", {"requests": "1000/s"})
    admissions = [limiter.admit(g, {"requests": 1}) for _ in range(64)]
    barrier = threading.Barrier(64)
    decreased = []

    def refused() -> None:
        barrier.wait()
        decreased.append(limiter.pause(g, 0.2, rate_limited=True).decreased)

    threads = [threading.Thread(target=refused) for _ in admissions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert decreased.count(True) == 1
    assert limiter.pause(g, 0.2, rate_limited=True).multiplier == pytest.approx(0.6)


@pytest.mark.integration
def test_a_rate_drop_stretches_the_queue_and_parked_slots(redis_url: str, key_prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    keys = KeyBuilder(key_prefix)
    limiter = RedisLimiter(client, keys=keys)
    lot = ParkingLot(client, keys)
    g = LimitGroup.from_specs("drop", {"requests": "10/s"})
    backlog = [limiter.admit(g, {"requests": 1}) for _ in range(30)]
    last = backlog[-1]
    lot.park("drop", "task.1", last.slot_ms, {"task_id": "task"})
    paused = limiter.pause(g, 0.0, rate_limited=True)
    assert paused.multiplier == pytest.approx(0.6)
    stretched = paused.now_ms + (last.slot_ms - paused.now_ms) / 0.6
    score = client.zscore(keys.parked("drop"), "task.1")
    assert score is not None
    assert score + EPOCH_MS == pytest.approx(stretched, abs=1)
    after = limiter.admit(g, {"requests": 1})
    assert after.slot_ms == pytest.approx(stretched + 1000 / 6, abs=2), "queued behind, at 6/s"


# -- end to end ------------------------------------------------------------------------

PROMPT = [{"role": "user", "content": "Classify this sentence, please."}]


def run_stack(
    stacks: list[LocalStack],
    profile: Profile,
    true_limit: str,
    ceiling: str,
    workers: int,
    *,
    threads: int = 32,
    faults: tuple[FaultConfig, ...] = (),
) -> LocalStack:
    """``threads`` worker threads in all (at least 4 per worker process)."""
    emu = EmulatorConfig(
        profile=profile,
        pools=(PoolConfig("default", parse_limits_text(f"requests={true_limit},tokens=10M/s")),),
        latency=LatencyConfig(ttft_ms=20),
        faults=faults,
    )
    provider_profile = {Profile.OPENAI: "openai", Profile.GEMINI: "gemini"}[profile]
    doc = {
        "providers": {"emu": {"profile": provider_profile, "base_url": "emulator"}},
        "groups": {
            "emu:m": {
                "provider": "emu",
                "models": ["m"],
                "requests": ceiling,
                "tokens": "10M/s",
                # The README's headroom for per-second windows: a burst of five kept
                # unused, so one task started late on a loaded host spends no 429
                # (at 0.05 one unit was left, and such a 429 paused the group).
                "headroom": COMPRESSED_HEADROOM,
            }
        },
    }
    stack = LocalStack(emu, doc).start()
    stacks.append(stack)
    stack.start_workers(workers, pool="threads", concurrency=max(4, threads // workers))
    return stack


def windows(
    stack: LocalStack, count: int, start: dict[str, Any] | None = None
) -> list[tuple[float, float]]:
    """Per 1 s window: (admitted requests, 429s), from the emulator's counters, counted
    from ``start`` (stats read earlier) or from now."""
    samples = []
    previous = start or stack.emulator_stats()
    for _ in range(count):
        time.sleep(1.0)
        current = stack.emulator_stats()
        admitted = admitted_requests(current) - admitted_requests(previous)
        refused = current["by_status"].get("429", 0) - previous["by_status"].get("429", 0)
        samples.append((admitted, float(refused)))
        previous = current
    return samples


def admitted_requests(stats: dict[str, Any]) -> float:
    pool = stats["pools"].get("org-emulator/default", {})  # there after the first request
    return float(pool.get("requests", {}).get("admitted_cost", 0.0))


def enqueue(stack: LocalStack, count: int) -> list[Any]:
    return [
        stack.enqueue(provider="emu", model="m", messages=PROMPT, max_tokens=10)
        for _ in range(count)
    ]


def consuming(stack: LocalStack, on: bool) -> None:
    """Add or cancel the main queue's consumer on every worker: a backlog queued while
    cancelled starts at once on all of them, at the first window."""
    assert stack.app is not None and stack.config is not None
    control = stack.app.control
    command = control.add_consumer if on else control.cancel_consumer
    command(stack.config.celery.queue, reply=True, timeout=5.0, limit=len(stack.workers))


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 4])
def test_over_configured_ceiling_learns_the_true_limit(
    stacks: list[LocalStack], workers: int
) -> None:
    stack = run_stack(stacks, Profile.OPENAI, "20/s", "40/s", workers)
    enqueue(stack, 900)
    per_window = windows(stack, 20)
    admitted = sum(a for a, _ in per_window)
    refused = sum(r for _, r in per_window)
    assert refused <= 0.02 * (admitted + refused), per_window
    steady = [a / 20 for a, _ in per_window[1:]]
    assert sum(steady) / len(steady) >= 0.90, per_window


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 4])
def test_silent_drop_and_rise_are_followed(stacks: list[LocalStack], workers: int) -> None:
    stack = run_stack(stacks, Profile.OPENAI, "20/s", "20/s", workers)
    enqueue(stack, 600)
    before = windows(stack, 3)
    stack.emulator_post("/__emu/limits", {"pool": "default", "limits": {"requests": "10/s"}})
    dropped = windows(stack, 6)
    stack.emulator_post("/__emu/limits", {"pool": "default", "limits": {"requests": "20/s"}})
    risen = windows(stack, 7)
    assert sum(r for _, r in before) == 0
    after_two = dropped[2:]
    assert sum(r for _, r in after_two) <= 0.01 * sum(a for a, _ in after_two) + 1, dropped
    # within 3 windows the new capacity is used again
    assert sum(a for a, _ in risen[3:]) / (20 * len(risen[3:])) >= 0.9, risen


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 4])
def test_a_herd_of_429s_in_flight_is_one_decrease(stacks: list[LocalStack], workers: int) -> None:
    # No headers (Gemini), so 429s feed AIMD. The emulator refuses the first 64 requests
    # and answers each 2 s after it arrived: all 64 are in flight before a 429 is back.
    storm = FaultConfig(FaultKind.RATE_LIMIT, max_hits=64, retry_after_s=1.0, delay_ms=2000)
    stack = run_stack(
        stacks, Profile.GEMINI, "10000/s", "10000/s", workers, threads=64, faults=(storm,)
    )
    assert stack.config is not None
    consuming(stack, on=False)
    results = enqueue(stack, 64)
    state = KeyBuilder(stack.config.redis.prefix).state("emu:m")
    client = redis.Redis.from_url(stack.config.redis.url)
    decreases: set[bytes] = set()  # the times of the decreases ('d')
    multipliers: set[float] = set()
    in_flight = None  # 429s decided by the emulator when the first decrease was seen
    consuming(stack, on=True)
    deadline = time.monotonic() + 30
    while not all(r.ready() for r in results) and time.monotonic() < deadline:
        last_decrease, multiplier = client.hmget(state, ["d", "m"])
        if last_decrease is not None:
            if in_flight is None:
                in_flight = stack.emulator_stats()["by_status"].get("429", 0)
            decreases.add(last_decrease)
        multipliers.add(float(multiplier or 1))
        time.sleep(0.02)
    facts = [r.get(timeout=1)["throttle"] for r in results]
    assert in_flight == 64, "every request was in flight before the first 429 came back"
    assert len(decreases) == 1, decreases
    assert min(multipliers) == pytest.approx(0.6)
    assert [f["rate_limited"] for f in facts] == [1] * 64


@pytest.mark.integration
@pytest.mark.scenario
@pytest.mark.parametrize("workers", [1, 4])
def test_without_headers_aimd_converges(stacks: list[LocalStack], workers: int) -> None:
    # Counted from the first request: the cold start's burst is part of "overall".
    stack = run_stack(stacks, Profile.GEMINI, "20/s", "40/s", workers)
    consuming(stack, on=False)
    enqueue(stack, 650)
    start = stack.emulator_stats()
    consuming(stack, on=True)
    per_window = windows(stack, 20, start)
    admitted = sum(a for a, _ in per_window)
    refused = sum(r for _, r in per_window)
    assert refused <= 0.05 * (admitted + refused), per_window
    assert sum(r for _, r in per_window[5:]) <= 0.05 * sum(a for a, _ in per_window[5:]) + 1


def test_a_lower_limit_is_learned_only_from_a_header_of_the_dimensions_window() -> None:
    """A provider of 100/s with its bucket nearly full says "limit 100" and tells no
    window; the group is configured 300 per 10 s. Learning "100" would cut the group
    to 10/s; the remaining count still holds. Once a header shows a 10 s window, a lower
    limit is learned."""
    g = LimitGroup.from_specs("g", {"requests": "300/10s"})
    full = Observation(
        received_at=0.0,
        dimensions={"requests": DimensionState(limit=100, remaining=99, reset_s=0.01)},
    )
    heard = observed_dimensions(g, full)["requests"]
    assert (heard.remaining, heard.limit) == (99, None)
    ten_s = Observation(
        received_at=0.0,
        dimensions={"requests": DimensionState(limit=200, remaining=100, reset_s=5.0)},
    )
    assert observed_dimensions(g, ten_s)["requests"].limit == 200

"""The runner (``workers/runtime.py``) against the in-memory limiter, without Redis.

The limiter is :class:`throttle.memory.MemoryLimiter` over the reference model on a
fake clock that moves only when the runner sleeps; the provider is a script of canned
answers. Each test drives one path (a call settled, a 429, a pause in force, a parked
or queued task, a deadline) and checks what the limiter holds afterwards.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from throttle.config import Config, ProviderSettings, config_from_dict
from throttle.errors import (
    OverloadedError,
    RateLimitedError,
    StorageError,
    ThrottleDeadlineError,
    TransportError,
)
from throttle.limiter import Admission
from throttle.limits import LimitGroup
from throttle.memory import MemoryLimiter
from throttle.model import LimiterModel
from throttle.providers.client import ProviderClient, ProviderResponse
from throttle.providers.credentials import Secret
from throttle.providers.observation import Observation
from throttle.providers.request import HttpRequest
from throttle.providers.usage import Usage
from throttle.scheduler_model import FairSchedulerModel
from workers.runtime import (
    ClientPool,
    Completed,
    CompletionCall,
    CompletionRunner,
    Parked,
    Queued,
    RetryLater,
    ThrottleState,
)

GROUP = "openai:mini"
T0_MS = 1_000_000.0
#: What a successful call used. OpenAI takes max_tokens (100 here) up front and never
#: gives the unused part back: a settled call holds 30 + 100 tokens.
USED = Usage(input_tokens=30, output_tokens=20)
SETTLED_TOKENS = 30 + 100
#: The group's usable levels when it is fresh (cold_start 1: a full bucket, less the
#: 2 % headroom).
FULL_REQUESTS, FULL_TOKENS = 60 * 0.98, 6000 * 0.98


class FakeClock:
    """Wall-clock time that moves only when the runner sleeps (kept in ms, so a sleep of
    a wait the model computed lands exactly on its slot)."""

    def __init__(self) -> None:
        self.now_ms = T0_MS
        self.slept_s: list[float] = []
        #: Called after each sleep (another worker acting meanwhile).
        self.meanwhile: Callable[[], None] = lambda: None

    def ms(self) -> float:
        return self.now_ms

    def wall(self) -> float:
        return self.now_ms / 1000

    def sleep(self, seconds: float) -> None:
        self.slept_s.append(seconds)
        self.now_ms += seconds * 1000
        self.meanwhile()


class FakeProvider(ProviderClient):
    """The provider's side: each call takes the next canned answer (a response, or an
    error to raise) and notes the time it came at. No HTTP."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__("openai", "http://provider.invalid", Secret("sk-test"))
        self.clock = clock
        self.answers: list[ProviderResponse | Exception] = []
        self.called_at_ms: list[float] = []

    def send(self, request: HttpRequest) -> ProviderResponse:
        self.called_at_ms.append(self.clock.now_ms)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class FakeClients(ClientPool):
    def __init__(self, provider: FakeProvider) -> None:
        super().__init__()
        self.provider = provider

    def get(self, settings: ProviderSettings, credential: str | None) -> ProviderClient:
        return self.provider


def ok() -> ProviderResponse:
    return ProviderResponse(200, {"choices": []}, USED, Observation(T0_MS / 1000), 0.2)


def rate_limited(wait_s: float) -> RateLimitedError:
    return RateLimitedError("429 Too Many Requests", wait_s=wait_s)


class Harness:
    def __init__(self, group_spec: Mapping[str, Any] | None = None) -> None:
        spec = {
            "provider": "openai",
            "models": ["gpt-4o-mini"],
            "requests": "60/min",
            "tokens": "6000/min",
            "cold_start": 1.0,
            **(group_spec or {}),
        }
        self.config: Config = config_from_dict(
            {
                "worker": {
                    "hold_horizon_s": 2.0,
                    "pause_jitter_min_s": 0.25,
                    "pause_jitter_max_s": 0.25,
                    "throttle_deadline_s": 60.0,
                },
                "providers": {"openai": {"base_url": "http://provider.invalid"}},
                "groups": {GROUP: spec},
            }
        )
        self.clock = FakeClock()
        self.model = LimiterModel(self.clock.ms)
        self.scheduler = FairSchedulerModel(self.model, [("interactive", 0.0)])
        self.limiter = MemoryLimiter(self.model, self.scheduler)
        self.provider = FakeProvider(self.clock)
        self.runner = CompletionRunner(
            self.config,
            self.limiter,
            FakeClients(self.provider),
            sleep=self.clock.sleep,
            wall=self.clock.wall,
            rng=random.Random(7),
        )
        settings = self.config.group_for("openai", "gpt-4o-mini")
        first = settings.credentials[0] if settings.credentials else None
        self.group: LimitGroup = self.config.limit_group(settings, None, first)

    def call(self) -> CompletionCall:
        return CompletionCall(
            "openai", "gpt-4o-mini", [{"role": "user", "content": "hello"}], max_tokens=100
        )

    def state(self, deadline_s: float = 60.0) -> ThrottleState:
        return ThrottleState.new(deadline_s, wall=self.clock.wall)

    def run(self, state: ThrottleState | None = None) -> Any:
        return self.runner.run(self.call(), state or self.state())

    def level(self, dimension: str) -> float:
        return self.model.level(self.group, dimension)

    def open_reservations(self) -> int:
        return len(self.model.groups[GROUP].records)


def test_a_call_settles_its_reservation_to_the_usage_the_provider_reported() -> None:
    h = Harness()
    h.provider.answers = [ok()]

    outcome = h.run()

    assert isinstance(outcome, Completed)
    assert outcome.result["throttle"]["attempts"] == 1
    assert outcome.result["usage"] == {"input_tokens": 30, "output_tokens": 20}
    assert h.clock.slept_s == []
    assert h.open_reservations() == 0
    # the prompt estimate is trued up to the 30 used; the output budget stays taken
    assert h.level("tokens") == pytest.approx(FULL_TOKENS - SETTLED_TOKENS)
    assert h.level("requests") == pytest.approx(FULL_REQUESTS - 1)


def test_a_429_pauses_the_group_lowers_its_rate_and_the_call_goes_again_after() -> None:
    h = Harness()
    h.provider.answers = [rate_limited(1.5), ok()]

    outcome = h.run()

    assert isinstance(outcome, Completed)
    throttle = outcome.result["throttle"]
    assert (throttle["attempts"], throttle["rate_limited"]) == (2, 1)
    # Retry-After plus the jitter, for the whole group; no 429 headers: a rate signal
    assert h.model.groups[GROUP].pause_ms == T0_MS + 1750
    assert h.model.multiplier(h.group) == pytest.approx(0.6)
    assert h.clock.slept_s == [1.75]
    assert h.provider.called_at_ms == [T0_MS, T0_MS + 1750]
    assert throttle["waited_s"] == pytest.approx(1.75)
    assert h.open_reservations() == 0


def test_a_429_refunds_the_tokens_keeps_the_request_and_queues_past_the_horizon() -> None:
    # A floor of 1 keeps the rate where it is, so the levels show the settle alone.
    h = Harness({"aimd": {"floor": 1.0}})
    h.provider.answers = [rate_limited(30.0)]

    outcome = h.run()

    assert isinstance(outcome, Queued)
    assert outcome.wait_s == pytest.approx(30.25)  # the re-admission found the pause
    assert outcome.state.rate_limited == 1
    assert outcome.state.reservation is None
    assert h.provider.called_at_ms == [T0_MS]
    assert h.clock.slept_s == []
    assert h.open_reservations() == 0
    assert h.level("tokens") == pytest.approx(FULL_TOKENS)  # the provider took none
    assert h.level("requests") == pytest.approx(FULL_REQUESTS - 1)  # but counted it


def test_a_retry_after_beyond_the_quota_threshold_is_terminal() -> None:
    h = Harness()
    h.provider.answers = [rate_limited(7200.0)]

    with pytest.raises(Exception, match="treated as quota exhausted"):
        h.run()
    assert h.open_reservations() == 0
    assert h.model.groups[GROUP].pause_ms == 0.0  # no pause for a day-long wait


def test_an_overload_pauses_without_lowering_the_rate() -> None:
    h = Harness()
    h.provider.answers = [OverloadedError("529 overloaded", wait_s=1.0), ok()]

    outcome = h.run()

    assert isinstance(outcome, Completed)
    assert outcome.result["throttle"]["overloaded"] == 1
    assert h.model.multiplier(h.group) == 1.0
    assert h.provider.called_at_ms == [T0_MS, T0_MS + 1250]


def test_a_pause_in_force_within_the_horizon_is_slept_on_before_the_call() -> None:
    h = Harness()
    h.limiter.pause(h.group, 1.0)
    h.provider.answers = [ok()]

    outcome = h.run()

    assert isinstance(outcome, Completed)
    assert h.clock.slept_s == [1.0]
    assert h.provider.called_at_ms == [T0_MS + 1000]


def test_a_pause_in_force_beyond_the_horizon_queues_the_task_without_calling() -> None:
    h = Harness()
    h.limiter.pause(h.group, 30.0)

    outcome = h.run()

    assert isinstance(outcome, Queued)
    assert outcome.wait_s == pytest.approx(30.0)
    assert outcome.deadline_ms == pytest.approx(T0_MS + 60_000)
    assert outcome.state.parks == 1
    assert outcome.state.parked_at_s == T0_MS / 1000
    assert h.provider.called_at_ms == []
    assert h.open_reservations() == 0  # nothing reserved
    assert h.level("tokens") == pytest.approx(FULL_TOKENS)


def test_a_pause_made_after_the_reservation_voids_it_at_the_slot() -> None:
    """Another worker's 429 lands while this one sleeps on its slot: begin finds the
    gate closed, the reservation is given back and the task admits again."""
    h = Harness()
    h.limiter.pause(h.group, 0.5)
    h.provider.answers = [ok()]
    paused: list[float] = []

    def another_worker_is_refused() -> None:
        if not paused:
            paused.append(h.limiter.pause(h.group, 1.0, rate_limited=False).until_ms)

    h.clock.meanwhile = another_worker_is_refused

    outcome = h.run()

    assert isinstance(outcome, Completed)
    assert paused == [T0_MS + 1500]
    assert h.clock.slept_s == [0.5, 1.0]
    assert h.provider.called_at_ms == [T0_MS + 1500]
    assert h.open_reservations() == 0
    # the voided reservation was given back whole: one request's worth is taken
    assert h.level("requests") == pytest.approx(FULL_REQUESTS - 1)


def test_work_waiting_in_the_fair_queue_queues_a_new_task_behind_it() -> None:
    h = Harness()
    h.limiter.pause(h.group, 10.0)  # holds the queued item back past its push
    h.scheduler.push(
        h.group,
        "earlier",
        {"requests": 1, "tokens": 100},
        lane="interactive",
        flow="f",
        weight=1.0,
        deadline_ms=0,
        now_ms=h.clock.ms(),
    )
    h.clock.now_ms += 10_000  # the pause is over; no pass has run since
    assert h.limiter.queued_work(GROUP) == 1

    assert isinstance(h.runner.queue_directly(h.call(), h.state()), Queued)
    outcome = h.run()

    assert isinstance(outcome, Queued)
    assert outcome.wait_s == 0.0  # not the limits: the queue before it
    assert h.provider.called_at_ms == []
    assert h.open_reservations() == 0


def test_a_task_with_an_empty_queue_goes_to_the_broker() -> None:
    h = Harness()
    assert h.runner.queue_directly(h.call(), h.state()) is None


def test_a_released_task_far_from_its_slot_is_parked_with_its_reservation() -> None:
    h = Harness()
    admission = h.limiter.admit(h.group, {"requests": 1, "tokens": 125})
    state = h.state()
    state.reservation, state.slot_ms = admission.reservation, T0_MS + 5000
    state.wait_at_release_s = 5.0

    outcome = h.run(state)

    assert isinstance(outcome, Parked)
    assert (outcome.group, outcome.slot_ms, outcome.wait_s) == (GROUP, T0_MS + 5000, 5.0)
    assert outcome.state.parks == 1
    assert outcome.state.reservation == admission.reservation  # kept for the next run
    assert h.provider.called_at_ms == []
    assert h.open_reservations() == 1


def test_a_released_task_near_its_slot_sleeps_begins_and_settles_its_reservation() -> None:
    h = Harness()
    admission = h.limiter.admit(h.group, {"requests": 1, "tokens": 125})
    state = h.state()
    state.reservation, state.slot_ms = admission.reservation, admission.slot_ms
    state.costs = {"requests": 1.0, "tokens": 125.0}
    state.provider_costs = {"requests": 1.0, "tokens": 125.0}
    state.input_tokens, state.output_tokens = 25.0, 100.0
    state.wait_at_release_s = 0.1
    h.provider.answers = [ok()]

    outcome = h.run(state)

    assert isinstance(outcome, Completed)
    assert h.clock.slept_s == [0.1]
    assert h.open_reservations() == 0
    refill = 0.1 * 100  # 100 tokens/s for 0.1 s
    assert h.level("tokens") == pytest.approx(FULL_TOKENS - SETTLED_TOKENS + refill)


def test_a_passed_deadline_fails_before_admission() -> None:
    h = Harness()
    h.provider.answers = [ok()]

    with pytest.raises(ThrottleDeadlineError):
        h.run(h.state(deadline_s=-1.0))
    assert h.provider.called_at_ms == []
    assert GROUP not in h.model.groups  # never admitted


def test_the_deadline_passes_while_every_concurrency_lease_is_held() -> None:
    h = Harness({"concurrency": 1})
    held = h.limiter.admit(h.group, {"requests": 1})
    assert held.lease  # another task's call in flight, for the lease's whole ttl

    with pytest.raises(ThrottleDeadlineError, match="concurrency lease"):
        h.run(h.state(deadline_s=3.0))

    assert h.provider.called_at_ms == []
    assert sum(h.clock.slept_s) >= 3.0 - 0.5  # it waited, in short steps, to the end
    assert max(h.clock.slept_s) <= 0.5


def test_a_transport_error_retries_later_and_keeps_the_reservation_charged() -> None:
    h = Harness()
    h.provider.answers = [TransportError("connection reset")]

    outcome = h.run()

    assert isinstance(outcome, RetryLater)
    assert 0.5 <= outcome.countdown_s <= 1.0  # the first step of the backoff
    assert outcome.state.error_retries == 1
    assert h.open_reservations() == 0
    # the provider may have counted it: the whole reservation stays taken
    assert h.level("tokens") <= FULL_TOKENS - 100
    assert h.level("requests") == pytest.approx(FULL_REQUESTS - 1)


def test_a_group_of_several_credentials_picks_the_one_that_starts_soonest() -> None:
    h = Harness({"credentials": ["key-a", "key-b"]})
    h.limiter.pause(h.group, 5.0)  # key-a's buckets
    h.provider.answers = [ok()]
    state = h.state()

    outcome = h.run(state)

    assert isinstance(outcome, Completed)
    assert state.credential == "key-b"
    assert h.clock.slept_s == []


class UnreachableLimiter(MemoryLimiter):
    """Redis away: every admission fails."""

    def admit(self, group: LimitGroup, costs: Mapping[str, float], **bounds: Any) -> Admission:
        raise StorageError("redis admission failed: connection refused")


@pytest.mark.parametrize("policy", ["closed", "open"])
def test_an_unreachable_limiter_follows_the_groups_failure_policy(policy: str) -> None:
    h = Harness({"failure_policy": policy})
    h.runner.limiter = UnreachableLimiter(h.model)
    h.provider.answers = [ok()]

    outcome = h.run()

    if policy == "closed":  # the task waits and comes back; nothing was sent
        assert isinstance(outcome, RetryLater)
        assert 0.5 <= outcome.countdown_s <= 1.0
        assert h.provider.called_at_ms == []
    else:  # the call goes out without the shared limits, and says so
        assert isinstance(outcome, Completed)
        assert outcome.result["throttle"]["unthrottled"] is True
        assert h.provider.called_at_ms == [T0_MS]

"""The path of one completion through the throttle, without Celery.

cost -> one atomic admission -> wait for the slot (sleep, or park far slots) -> call ->
settle the actual usage. A provider 429 pauses the whole limit group for every worker
and re-slots the task; waits and 429s spend the task's throttle deadline, never its
error retries. The Celery task (:mod:`workers.task`) turns the outcomes into acks,
parks and retries. The runner needs a :class:`~throttle.ports.Limiter`: the Redis one in
workers, the in-memory one in unit tests (tests/test_runner.py).
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from throttle.config import Config, GroupSettings
from throttle.errors import (
    OverloadedError,
    QuotaExhaustedError,
    RateLimitedError,
    ReservationHandleError,
    StorageError,
    StreamBrokenError,
    TerminalProviderError,
    ThrottleDeadlineError,
    TransportError,
)
from throttle.limits import LimitGroup
from throttle.ports import Limiter
from throttle.providers.accounting import rejected_deltas
from throttle.providers.client import ProviderClient
from throttle.providers.observation import Observation
from throttle.providers.tokens import TokenEstimator
from throttle.reservation import Admission, BeginOutcome
from workers import credential_choice, metrics
from workers.estimates import learn_usage, plan_costs
from workers.observed import observed_dimensions, room_left
from workers.provider_call import build_request, send
from workers.resources import ClientPool, SleeperGate
from workers.run_state import (
    Completed,
    CompletionCall,
    EventSink,
    Outcome,
    Parked,
    Queued,
    RetryLater,
    ThrottleState,
    result_body,
)

#: Importers take these from here, as before they moved to their own modules.
__all__ = [
    "ClientPool",
    "Completed",
    "CompletionCall",
    "CompletionRunner",
    "EventSink",
    "Outcome",
    "Parked",
    "Queued",
    "RetryLater",
    "SleeperGate",
    "ThrottleState",
    "observed_dimensions",
    "room_left",
]


class CompletionRunner:
    """Runs completions through the throttle. One per worker process; thread-safe."""

    def __init__(
        self,
        config: Config,
        limiter: Limiter,
        clients: ClientPool,
        *,
        estimator: TokenEstimator | None = None,
        sleepers: SleeperGate | None = None,
        sleep: Callable[[float], None] = time.sleep,
        wall: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.limiter = limiter
        self.clients = clients
        self.estimator = estimator or TokenEstimator()
        self.sleepers = sleepers or SleeperGate(8)
        self._sleep = sleep
        self._wall = wall
        self._rng = rng or random.Random()

    # -- helpers --------------------------------------------------------------------

    def _jitter_s(self) -> float:
        w = self.config.worker
        return self._rng.uniform(w.pause_jitter_min_s, w.pause_jitter_max_s)

    def _backoff_s(self, attempt: int, base_s: float = 1.0, cap_s: float = 30.0) -> float:
        """Full-jitter exponential backoff, never shorter than half the step."""
        step = min(cap_s, base_s * 2.0 ** max(0, attempt - 1))
        return step * self._rng.uniform(0.5, 1.0)

    def _remaining_s(self, state: ThrottleState) -> float:
        return state.deadline_at_s - self._wall()

    def _check_deadline(self, state: ThrottleState, what: str) -> float:
        remaining = self._remaining_s(state)
        if remaining <= 0:
            raise ThrottleDeadlineError(
                f"throttle deadline passed ({what}); waited {state.waited_s:.1f} s,"
                f" {state.rate_limited} rate-limit answers"
            )
        return remaining

    def _settle(
        self,
        group: LimitGroup,
        settings: GroupSettings,
        state: ThrottleState,
        deltas: Mapping[str, float],
        observation: Observation | None = None,
    ) -> None:
        if state.reservation is None:
            return
        spread = self.config.costs_for(settings, group, deltas)
        heard = observed_dimensions(group, observation)
        # If Redis is down the reservation expires by itself; never fail a finished call.
        # A handle from before the group's dimensions changed is simply kept.
        with contextlib.suppress(StorageError, ReservationHandleError):
            done = self.limiter.settle(group, state.reservation, spread, heard)
            metrics.settled(group.name, state.costs, spread, done.multiplier if done else None)
        state.forget_reservation()

    # -- the path -------------------------------------------------------------------

    def run(
        self, call: CompletionCall, state: ThrottleState, sink: EventSink | None = None
    ) -> Outcome:
        """Run ``call`` through the throttle; a streamed call's events go to ``sink``
        as they arrive."""
        try:
            return self._run(call, state, sink)
        except StorageError as exc:
            # Redis away past admission (the credential choice, begin, a pause after a
            # 429; all before a stream's first event): the task waits and comes back
            # with its state (a reservation it holds is begun then); admission itself
            # follows the failure policy.
            return RetryLater(self._backoff_s(state.error_retries + 1), exc, state)

    def _run(self, call: CompletionCall, state: ThrottleState, sink: EventSink | None) -> Outcome:
        if state.parked_at_s is not None:
            state.waited_s += max(0.0, self._wall() - state.parked_at_s)
            state.parked_at_s = None
        settings = self.config.group_for(call.provider, call.model)
        provider = self.config.providers[settings.provider]
        credential = self.credential_for(call, settings, state)
        client = self.clients.get(provider, credential)
        request = build_request(client, call)
        group = self.config.limit_group(settings, call.tenant, state.credential)
        while True:
            if state.reservation is None:
                remaining = self._check_deadline(state, "before admission")
                costs = plan_costs(
                    self.config, self.estimator, call, settings, group, client.profile, state
                )
                # A slot within the hold horizon is slept on here, while this process
                # has a sleeper place free; anything later waits in the fair queue.
                sleeping = self.sleepers.try_enter()
                try:
                    horizon_s = self.config.worker.hold_horizon_s if sleeping else 0.0
                    try:
                        # A slot that only this tenant's cap puts further away
                        # than the release lead waits in the fair queue instead:
                        # reserved now, it would hold the whole group back to it.
                        admission = self.limiter.admit(
                            group,
                            costs,
                            max_wait_s=min(remaining, horizon_s),
                            tenant_max_wait_s=self.config.worker.release_lead_s,
                        )
                    except StorageError as exc:
                        if settings.failure_policy == "open":
                            return self._call_unthrottled(call, client, request, state, sink)
                        return RetryLater(self._backoff_s(state.error_retries + 1), exc, state)
                    if not admission.reserved:
                        return self._queued(call, settings, group, state, admission, remaining)
                    state.reservation = admission.reservation
                    state.slot_ms = admission.slot_ms
                    metrics.admitted(group.name, costs, *self._labels(call, settings))
                    needs_begin = admission.needs_begin
                    if admission.wait_s > 0:
                        self._sleep(admission.wait_s)
                        state.waited_s += admission.wait_s
                finally:
                    if sleeping:
                        self.sleepers.leave()
            else:
                # Released by the fair scheduler (or parked by an older version) with
                # its slot at most the release lead away.
                wait_s, needs_begin = state.wait_at_release_s or 0.0, True
                slot_ms = state.slot_ms or 0.0
                state.wait_at_release_s = None
                metrics.admitted(group.name, state.costs, *self._labels(call, settings))
                if wait_s > 2 * self.config.worker.release_lead_s + 0.05:
                    state.parks += 1
                    state.parked_at_s = self._wall()
                    metrics.parked(group.name)
                    slot_ms = slot_ms or self.limiter.server_time_ms() + wait_s * 1000
                    return Parked(group.name, slot_ms, wait_s, state)
                if wait_s > 0:
                    self._sleep(wait_s)
                    state.waited_s += wait_s

            if needs_begin and not self._begin(group, state):
                continue  # paused after the reservation was made: re-admit

            outcome = self._call(call, client, request, group, settings, state, sink)
            if outcome is not None:
                return outcome

    def credential_for(
        self, call: CompletionCall, settings: GroupSettings, state: ThrottleState
    ) -> str | None:
        """The credential ``call`` runs on (:func:`workers.credential_choice.choose`)."""
        config, limiter, estimator = self.config, self.limiter, self.estimator
        return credential_choice.choose(config, limiter, estimator, call, settings, state)

    def _labels(self, call: CompletionCall, settings: GroupSettings) -> tuple[str, str]:
        """The metrics' lane and tenant labels of ``call``."""
        lane = call.lane or self.config.scheduler.default_lane
        return lane, metrics.tenant_label(call.tenant, settings.tenant_plans)

    def queue_directly(self, call: CompletionCall, state: ThrottleState) -> Queued | None:
        """For a producer: the fair-queue entry of a new ``call`` when its group already
        has work queued (it would only join the queue behind it), else None: send it to
        the broker as usual. Saves the task a pass through Celery."""
        settings = self.config.group_for(call.provider, call.model)
        self.credential_for(call, settings, state)
        group = self.config.limit_group(settings, call.tenant, state.credential)
        if self.limiter.queued_work(group.name) <= 0:
            return None
        profile = self.config.providers[settings.provider].resolved_profile()
        plan_costs(self.config, self.estimator, call, settings, group, profile, state)
        return self._queue_entry(call, settings, group, state, state.deadline_at_s * 1000, 0.0)

    def _queued(
        self,
        call: CompletionCall,
        settings: GroupSettings,
        group: LimitGroup,
        state: ThrottleState,
        admission: Admission,
        remaining_s: float,
    ) -> Queued:
        metrics.parked(group.name)
        deadline_ms = admission.now_ms + remaining_s * 1000
        return self._queue_entry(call, settings, group, state, deadline_ms, admission.wait_s)

    def _queue_entry(
        self,
        call: CompletionCall,
        settings: GroupSettings,
        group: LimitGroup,
        state: ThrottleState,
        deadline_ms: float,
        wait_s: float,
    ) -> Queued:
        """The task joins its flow in the group's fair queue (its time there counts as
        waited)."""
        state.parks += 1
        state.parked_at_s = self._wall()
        return Queued(
            group,
            self.config.scheduler.lane(call.lane),
            call.tenant,
            self.config.tenant_weight(settings, call.tenant),
            deadline_ms,
            wait_s,
            state,
            call.tenant in settings.tenant_plans,
        )

    def _begin(self, group: LimitGroup, state: ThrottleState) -> bool:
        """At the slot: False if the group was paused since (the reservation is void and
        given back)."""
        assert state.reservation is not None
        busy_rounds = 0
        while True:
            outcome = self.limiter.begin(group, state.reservation)
            if outcome.outcome is BeginOutcome.GO:
                return True
            if outcome.outcome is BeginOutcome.PAUSED:
                with contextlib.suppress(ReservationHandleError):  # then it is simply kept
                    self.limiter.cancel(group, state.reservation)
                state.forget_reservation()
                return False
            if outcome.outcome is BeginOutcome.WINDOW_FULL:  # it started late: wait its turn
                self._check_deadline(state, "waiting for room in a sliding window")
                self._sleep(outcome.wait_s)
                state.waited_s += outcome.wait_s
                continue
            busy_rounds += 1  # concurrency cap full: wait for a lease to come back
            self._check_deadline(state, "waiting for a concurrency lease")
            pause_s = min(0.5, 0.01 * 2.0 ** min(busy_rounds, 6)) * self._rng.uniform(0.5, 1.0)
            self._sleep(pause_s)
            state.waited_s += pause_s

    def _call(
        self,
        call: CompletionCall,
        client: ProviderClient,
        request: Any,
        group: LimitGroup,
        settings: GroupSettings,
        state: ThrottleState,
        sink: EventSink | None = None,
    ) -> Outcome | None:
        """Call the provider once; None means "re-slot and loop"."""
        state.attempts += 1
        state.started_ms = self._wall() * 1000
        reservation = state.provider_reservation()
        slot_ms = state.slot_ms
        try:
            response = send(call, client, request, sink)
        except RateLimitedError as exc:
            state.rate_limited += 1
            wait_s = exc.wait_s if exc.wait_s is not None else 1.0
            rejected = rejected_deltas(reservation)
            if wait_s > self.config.worker.max_retry_after_s:
                self._settle(group, settings, state, rejected, exc.observation)
                raise QuotaExhaustedError(
                    f"{group.name}: provider asks to wait {wait_s:.0f} s; treated as quota"
                    f" exhausted ({exc})",
                    status=exc.status,
                ) from exc
            # Every worker waits out Retry-After (plus jitter); the shared rate drops once,
            # unless the 429's own headers show the request had room.
            # Pause before settling: the settle must not take this window for a clean one
            # and raise the rate just before the decrease.
            rate_signal = not room_left(group, exc.observation, state.costs)
            pause = self.limiter.pause(group, wait_s + self._jitter_s(), rate_limited=rate_signal)
            metrics.rate_limited(group.name, pause.multiplier)
            self._settle(group, settings, state, rejected, exc.observation)
            return None
        except OverloadedError as exc:
            state.overloaded += 1
            wait_s = exc.wait_s if exc.wait_s is not None else self._backoff_s(state.overloaded)
            self._settle(group, settings, state, rejected_deltas(reservation), exc.observation)
            self.limiter.pause(group, wait_s + self._jitter_s())  # overload is not our quota
            return None
        except TransportError as exc:
            self._settle(group, settings, state, {})
            state.error_retries += 1
            if state.error_retries > self.config.worker.max_error_retries:
                raise
            return RetryLater(self._backoff_s(state.error_retries), exc, state)
        except StreamBrokenError:
            self._settle(group, settings, state, {})  # the provider counted it: keep it
            raise
        except TerminalProviderError:
            self._settle(group, settings, state, rejected_deltas(reservation))
            raise
        deltas = client.profile.settle(reservation, response.usage)
        self._settle(group, settings, state, deltas, response.observation)
        state.slot_ms = slot_ms  # reported with the result
        metrics.waited(group.name, state.waited_s, *self._labels(call, settings))
        learn_usage(self.estimator, call, response)
        return Completed(result_body(call, group.name, response, state))

    def _call_unthrottled(
        self,
        call: CompletionCall,
        client: ProviderClient,
        request: Any,
        state: ThrottleState,
        sink: EventSink | None,
    ) -> Outcome:
        """Failure policy "open": Redis is down, so call without the shared limiter."""
        state.attempts += 1
        response = send(call, client, request, sink)
        learn_usage(self.estimator, call, response)
        group = self.config.group_for(call.provider, call.model).name
        result = result_body(call, group, response, state)
        result["throttle"]["unthrottled"] = True
        return Completed(result)

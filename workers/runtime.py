"""The path of one completion through the throttle, without Celery.

cost -> one atomic admission -> wait for the slot (sleep, or park far slots) -> call ->
settle the actual usage. A provider 429 pauses the whole limit group for every worker
and re-slots the task; waits and 429s spend the task's throttle deadline, never its
error retries. The Celery task (:mod:`workers.task`) turns the outcomes into acks,
parks and retries.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from throttle.config import Config, GroupSettings, ProviderSettings
from throttle.errors import (
    InvalidRequestError,
    OverloadedError,
    QuotaExhaustedError,
    RateLimitedError,
    ReservationHandleError,
    StorageError,
    StreamBrokenError,
    TerminalProviderError,
    ThrottleDeadlineError,
    ThrottleError,
    TransportError,
)
from throttle.limiter import Admission, BeginOutcome, Observed
from throttle.limits import LimitGroup
from throttle.ports import Limiter
from throttle.providers.accounting import Reservation, rejected_deltas
from throttle.providers.client import ProviderClient, ProviderResponse, Timeouts
from throttle.providers.observation import Observation
from throttle.providers.profile import Profile
from throttle.providers.request import Message
from throttle.providers.sse import SseEvent
from throttle.providers.streaming import check_streamable
from throttle.providers.tokens import TokenEstimator
from workers import metrics


@dataclass(frozen=True)
class CompletionCall:
    """What the caller asked for. Holds the prompt: never log it."""

    provider: str
    model: str
    messages: Sequence[Message] = field(repr=False)
    max_tokens: int
    tenant: str | None = None
    credential: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict, repr=False)
    #: Sent as ``x-client-request-id`` so the provider (and our emulator) can tell a
    #: retried request from a new one; the Celery task id.
    request_id: str | None = None
    #: The fair scheduler's priority lane (None: the configured default).
    lane: str | None = None
    #: Ask the provider for a stream and pass its events to the run's sink.
    stream: bool = False


@dataclass
class ThrottleState:
    """Facts that travel with a task across parks and retries (plain JSON)."""

    #: Wall-clock epoch seconds after which waiting is given up.
    deadline_at_s: float
    #: The limiter's handle of the current reservation (``Admission.reservation``).
    reservation: str | None = None
    #: Costs reserved per limit-group dimension, and the provider's split of them.
    costs: dict[str, float] = field(default_factory=dict)
    input_tokens: float = 0.0
    output_tokens: float = 0.0
    provider_costs: dict[str, float] = field(default_factory=dict)
    #: Slot of the current reservation, ms on the Redis server's clock.
    slot_ms: float | None = None
    #: Set by the dispatcher: seconds from release until the slot.
    wait_at_release_s: float | None = None
    #: Wall-clock ms at which the last provider call started.
    started_ms: float | None = None
    #: Wall-clock s at which the task was parked (its time parked counts as waited).
    parked_at_s: float | None = None
    #: Set by the dispatcher: the parked entry to claim (``group``, ``entry``) and this
    #: release's ``token``.
    release: dict[str, str] | None = None
    #: Set at queueing when the entry is stored as a ready-made message: its id. The
    #: pass that releases it writes the release into the message's header
    #: (``workers/message.py``); a copy of the message sent any other way (a retry)
    #: no longer has this set and ignores that header.
    awaiting_release: str | None = None
    #: The credential this task runs on, once chosen (a group with several): its
    #: buckets hold the reservation, and its key makes the call.
    credential: str | None = None
    waited_s: float = 0.0
    attempts: int = 0
    rate_limited: int = 0
    overloaded: int = 0
    parks: int = 0
    error_retries: int = 0

    @classmethod
    def new(cls, deadline_s: float, wall: Callable[[], float] = time.time) -> ThrottleState:
        return cls(deadline_at_s=wall() + deadline_s)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ThrottleState:
        known = cls.__dataclass_fields__
        fields = {k: v for k, v in data.items() if k in known}
        if "reservation" not in data and data.get("reservation_id"):
            # A task parked by a version that kept records in Redis: its bare id keeps
            # its slot and lease; settling it finishes nothing (its record expires).
            fields["reservation"] = data["reservation_id"]
        return cls(**fields)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def forget_reservation(self) -> None:
        self.reservation = None
        self.slot_ms = None
        self.costs = {}
        self.provider_costs = {}
        self.wait_at_release_s = None

    def facts(self) -> dict[str, Any]:
        """What a result reports about the throttle."""
        return {
            "waited_s": round(self.waited_s, 4),
            "attempts": self.attempts,
            "rate_limited": self.rate_limited,
            "overloaded": self.overloaded,
            "parks": self.parks,
            "slot_ms": self.slot_ms,
            "started_ms": self.started_ms,
        }


@dataclass(frozen=True)
class Completed:
    result: dict[str, Any]


@dataclass(frozen=True)
class Parked:
    """Park the task until ``slot_ms`` (server clock), ``wait_s`` from now; the message
    can be acknowledged."""

    group: str
    slot_ms: float
    wait_s: float
    state: ThrottleState


@dataclass(frozen=True)
class Queued:
    """The task cannot start within the hold horizon (or work is queued before it):
    it joins its flow in the group's fair queue (:mod:`throttle.scheduler`), which
    releases it when the group's limits can take it. The costs to reserve then are
    in ``state``; ``deadline_ms`` is its throttle deadline on the server's clock."""

    group: LimitGroup
    lane: str
    tenant: str | None
    weight: float
    deadline_ms: float
    wait_s: float
    state: ThrottleState
    #: The status keeps this tenant's share and waits apart (it has its own plan);
    #: others are summed per lane.
    stats_apart: bool = False


@dataclass(frozen=True)
class RetryLater:
    """Send the task again after ``countdown_s`` because of ``error`` (Redis down, a
    transport failure)."""

    countdown_s: float
    error: ThrottleError
    state: ThrottleState


Outcome = Completed | Parked | Queued | RetryLater


#: Where a streamed call's events go as they arrive (workers/relay.py).
EventSink = Callable[[Sequence[SseEvent]], None]


def _send(
    call: CompletionCall, client: ProviderClient, request: Any, sink: EventSink | None
) -> ProviderResponse:
    if call.stream:
        return client.stream(request, sink or (lambda _events: None))
    return client.send(request)


class SleeperGate:
    """Caps how many threads of one worker process sleep on slots at once, so a
    saturated group never fills the whole pool (no head-of-line blocking)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._count = 0
        self._lock = threading.Lock()

    def try_enter(self) -> bool:
        with self._lock:
            if self._count >= self.capacity:
                return False
            self._count += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self._count -= 1


class ClientPool:
    """One provider client per (provider, credential) in this process."""

    def __init__(self, pool_size: int = 16) -> None:
        self.pool_size = pool_size
        self._clients: dict[tuple[str, str | None], ProviderClient] = {}
        self._lock = threading.Lock()

    def get(self, settings: ProviderSettings, credential: str | None) -> ProviderClient:
        name = credential or settings.credential
        key = (settings.name, name)
        client = self._clients.get(key)
        if client is None:
            with self._lock:
                client = self._clients.get(key)
                if client is None:
                    client = ProviderClient(
                        settings.resolved_profile(),
                        settings.base_url,
                        name,
                        timeouts=Timeouts(settings.connect_timeout_s, settings.read_timeout_s),
                        pool_size=self.pool_size,
                    )
                    self._clients[key] = client
        return client

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()


def observed_dimensions(group: LimitGroup, observation: Observation | None) -> dict[str, Observed]:
    """The provider's view of the group's own dimensions, by name.

    A header describes the bucket that binds (OpenAI reports TPD in the token headers
    when it binds); one whose implied window cannot be near the dimension's period, even
    allowing for the rounding of ``remaining``, is not about that dimension and is left
    out.
    """
    if observation is None:
        return {}
    heard: dict[str, Observed] = {}
    for dim in group.dimensions:
        state = observation.dimensions.get(dim.name)
        if state is None or (state.remaining is None and state.limit is None):
            continue
        bounds_s = state.implied_window_bounds_s
        near = bounds_s is not None and (
            bounds_s[1] <= 2.0 * dim.period_s and bounds_s[0] >= 0.5 * dim.period_s
        )
        if (
            bounds_s is not None
            and not near
            and (bounds_s[1] < 0.5 * dim.period_s or bounds_s[0] > 2.0 * dim.period_s)
        ):
            continue
        limit = state.limit
        if limit is not None and not dim.auto and limit < dim.capacity and not near:
            # A limit below the configured one is learned only from a header whose window
            # is known to be this dimension's: a full bucket's header (nothing used, so no
            # window) of a 100/s provider must not teach a 300/10s dimension "100 per 10 s".
            limit = None
        heard[dim.name] = Observed(state.remaining, limit, state.remaining_granularity)
    return heard


def room_left(
    group: LimitGroup, observation: Observation | None, costs: Mapping[str, float]
) -> bool:
    """Whether the provider's headers on a 429 show room for the refused request in
    every dimension they report (at least one): then the refusal was not about the
    rate these limits pace (an injected fault, a capacity 429, a limit we do not
    track), and the group pauses for the wait without lowering its rate. Without
    such headers a 429 counts as a rate signal."""
    heard = observed_dimensions(group, observation)
    known = {name: o.remaining for name, o in heard.items() if o.remaining is not None}
    return bool(known) and all(
        remaining >= costs.get(name, 0.0) for name, remaining in known.items()
    )


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

    def _reservation(self, state: ThrottleState) -> Reservation:
        return Reservation(state.provider_costs, state.input_tokens, state.output_tokens)

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
        if not isinstance(call.max_tokens, int) or call.max_tokens < 1:
            raise InvalidRequestError(f"max_tokens must be a positive integer: {call.max_tokens!r}")
        request = client.build(
            model=call.model, messages=call.messages, max_tokens=call.max_tokens, **call.params
        )
        if call.stream:
            check_streamable(client.profile)
        if call.request_id:
            headers = {**request.headers, "x-client-request-id": call.request_id}
            request = dataclasses.replace(request, headers=headers)
        group = self.config.limit_group(settings, call.tenant, state.credential)
        while True:
            if state.reservation is None:
                remaining = self._check_deadline(state, "before admission")
                costs = self._plan_costs(call, settings, group, client.profile, state)
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
        """The credential ``call`` runs on. A group with several (``credentials``):
        the one the task holds already, or the one it names, or else the one whose
        buckets would start it soonest (the shortest fair queue first), kept in
        ``state`` for the rest of its life. Otherwise the task's own, if any (it only
        swaps the key; the buckets are the group's)."""
        if not settings.credentials:
            return call.credential
        chosen = state.credential or call.credential
        if chosen is not None:
            if chosen not in settings.credentials:
                raise InvalidRequestError(
                    f"credential {chosen!r} is not one of group {settings.name!r}'s"
                    f" ({', '.join(settings.credentials)})"
                )
            state.credential = chosen
            return chosen
        profile = self.config.providers[settings.provider].resolved_profile()
        first = self.config.limit_group(settings, call.tenant, settings.credentials[0])
        # every credential's group has the same dimensions: the costs are computed once
        costs = self._plan_costs(call, settings, first, profile, ThrottleState(0.0))
        state.credential = min(
            settings.credentials,
            key=lambda credential: self.limiter.start_wait_s(
                self.config.limit_group(settings, call.tenant, credential), costs
            ),
        )
        return state.credential

    def _labels(self, call: CompletionCall, settings: GroupSettings) -> tuple[str, str]:
        """The metrics' lane and tenant labels of ``call``."""
        lane = call.lane or self.config.scheduler.default_lane
        return lane, metrics.tenant_label(call.tenant, settings.tenant_plans)

    def _plan_costs(
        self,
        call: CompletionCall,
        settings: GroupSettings,
        group: LimitGroup,
        profile: Profile,
        state: ThrottleState,
    ) -> Mapping[str, float]:
        """The costs to reserve for ``call`` per group dimension (also kept in ``state``,
        with the provider's split, for the settle)."""
        estimate = self.estimator.estimate_messages(call.model, call.messages)
        reservation = profile.reserve(
            input_tokens=estimate, max_tokens=call.max_tokens, params=call.params
        )
        costs = self.config.costs_for(settings, group, reservation.costs)
        state.costs = dict(costs)
        state.provider_costs = dict(reservation.costs)
        state.input_tokens = reservation.input_tokens
        state.output_tokens = reservation.output_tokens
        return costs

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
        self._plan_costs(call, settings, group, profile, state)
        state.parks += 1
        state.parked_at_s = self._wall()
        return Queued(
            group,
            self.config.scheduler.lane(call.lane),
            call.tenant,
            self.config.tenant_weight(settings, call.tenant),
            state.deadline_at_s * 1000,
            0.0,
            state,
            call.tenant in settings.tenant_plans,
        )

    def _queued(
        self,
        call: CompletionCall,
        settings: GroupSettings,
        group: LimitGroup,
        state: ThrottleState,
        admission: Admission,
        remaining_s: float,
    ) -> Queued:
        state.parks += 1
        state.parked_at_s = self._wall()
        metrics.parked(group.name)
        return Queued(
            group,
            self.config.scheduler.lane(call.lane),
            call.tenant,
            self.config.tenant_weight(settings, call.tenant),
            admission.now_ms + remaining_s * 1000,
            admission.wait_s,
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
        reservation = self._reservation(state)
        slot_ms = state.slot_ms
        try:
            response = _send(call, client, request, sink)
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
        self._learn(call, response)
        return Completed(self._result_body(call, group.name, response, state))

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
        response = _send(call, client, request, sink)
        self._learn(call, response)
        group = self.config.group_for(call.provider, call.model).name
        result = self._result_body(call, group, response, state)
        result["throttle"]["unthrottled"] = True
        return Completed(result)

    def _learn(self, call: CompletionCall, response: ProviderResponse) -> None:
        usage = response.usage
        if usage is None:
            return
        self.estimator.observe_prompt(
            call.model,
            prompt_chars=TokenEstimator.prompt_chars(call.messages),
            prompt_tokens=usage.input_tokens,
            messages=len(call.messages),
        )
        self.estimator.observe_output(
            call.model, output_tokens=usage.output_tokens, max_tokens=call.max_tokens
        )

    @staticmethod
    def _result_body(
        call: CompletionCall, group: str, response: ProviderResponse, state: ThrottleState
    ) -> dict[str, Any]:
        usage = response.usage
        # The throttle's facts first: monitors such as Flower show the repr of a result cut
        # at 1024 characters (Celery's ``resultrepr_maxsize``), and a response can be long.
        return {
            "throttle": {"group": group, **state.facts()},
            "provider": call.provider,
            "model": call.model,
            "response": dict(response.body),
            "usage": None
            if usage is None
            else {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
        }

"""The Redis limiter: atomic multi-dimension admission with reserved start slots.

One :meth:`RedisLimiter.admit` is one Redis round trip. It checks every dimension of a
limit group against the request's costs, on the Redis server's clock, and returns the
start slot it reserved: now, or a later time in arrival order. The caller sleeps until
the slot (or parks the task), calls :meth:`begin` if the slot was in the future, makes
the call, then :meth:`settle`\\s the actual cost. :meth:`cancel` gives a reservation
back; :meth:`pause` closes a group's gate for every worker (after a provider 429).

Redis keeps nothing per reservation while it is open: the admission returns a handle
(:attr:`Admission.reservation`) that carries what settling or cancelling it needs, and
the caller keeps it (a parked task keeps it in its state). Settling or cancelling marks
the reservation finished, so it happens once.

Example::

    limiter = RedisLimiter(redis.Redis())
    group = LimitGroup.from_specs(
        "openai:gpt-4o-mini", {"requests": "500/min", "tokens": "200k/min"}
    )
    admission = limiter.admit(group, {"requests": 1, "tokens": 1200})
    time.sleep(admission.wait_s)
    if admission.needs_begin:
        limiter.begin(group, admission.reservation)  # PAUSED: cancel and admit again
    ...  # the provider call; it used 800 tokens of the 1200 reserved
    limiter.settle(group, admission.reservation, {"tokens": 800 - 1200})
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, cast

import redis

from throttle import fields
from throttle.connect import RedisClient, is_cluster
from throttle.errors import CostExceedsCapacityError, ReservationHandleError, StorageError
from throttle.keys import KeyBuilder
from throttle.limits import LimitGroup
from throttle.reservation import (
    Admission,
    Begin,
    BeginOutcome,
    Observed,
    Pause,
    QueueEntry,
    Settled,
    StartWait,
    reservation_id_of,
)
from throttle.scripts import Scripts
from throttle.spec import (
    EPOCH_MS,
    ID_FORBIDDEN,
    MALFORMED_RECORD,
    CalendarStarts,
    Handle,
    Plan,
    absolute_ms,
    as_text,
    begin_keys_args,
    cancel_args,
    cost_texts,
    pause_args,
    plan_group,
    queue_entry,
    settle_args,
)
from throttle.start_wait import start_wait, start_wait_fields

#: What other modules import from here (the result types live in throttle.reservation,
#: the plan and the wire format in throttle.spec).
__all__ = [
    "EPOCH_MS",
    "PLAN_CACHE_SIZE",
    "Admission",
    "Begin",
    "BeginOutcome",
    "Observed",
    "Pause",
    "QueueEntry",
    "RedisLimiter",
    "Settled",
    "StartWait",
    "as_text",
    "reservation_id_of",
]

#: Groups (one per tenant with a share) whose plans a limiter keeps; past this the
#: oldest is dropped and planned again when it comes back.
PLAN_CACHE_SIZE = 2048


@contextmanager
def _storage_errors(action: str) -> Iterator[None]:
    try:
        yield
    except redis.ResponseError as exc:
        if MALFORMED_RECORD in str(exc):
            raise ReservationHandleError(f"{action}: {MALFORMED_RECORD}") from exc
        raise StorageError(f"redis {action} failed: {exc}") from exc
    except redis.RedisError as exc:
        raise StorageError(f"redis {action} failed: {exc}") from exc


class RedisLimiter:
    """Shared limiter state in Redis; safe to use from many threads and processes.

    ``record_ttl_s`` bounds how long after its slot a reservation can still be settled
    or cancelled; past it, the reservation is simply kept (never refunded twice).
    """

    def __init__(
        self,
        client: RedisClient,
        *,
        keys: KeyBuilder | None = None,
        record_ttl_s: float = 900.0,
    ) -> None:
        self.client = client
        self.keys = keys or KeyBuilder()
        self.record_ttl_ms = int(record_ttl_s * 1000)
        self.scripts = Scripts(client)
        self._plans: dict[int, tuple[LimitGroup, Plan]] = {}
        self._calendars = CalendarStarts()

    # -- planning -----------------------------------------------------------------

    def _plan(self, group: LimitGroup) -> Plan:
        cached = self._plans.get(id(group))
        if cached is not None and cached[0] is group:
            return cached[1]
        plan = plan_group(group, self.keys)
        if len(self._plans) >= PLAN_CACHE_SIZE:  # one per tenant: drop the oldest
            self._plans.pop(next(iter(self._plans)), None)
        self._plans[id(group)] = (group, plan)
        return plan

    def _keys(self, group: LimitGroup, plan: Plan, token: str) -> list[str]:
        marker = self.keys.finished(group.name, token)
        wake = self.keys.wake(group.name)
        return [plan.state_key, marker, plan.leases_key, plan.parked_key, *plan.other_keys, wake]

    # -- operations ---------------------------------------------------------------

    def admit(
        self,
        group: LimitGroup,
        costs: Mapping[str, float] | Sequence[float],
        *,
        max_wait_s: float | None = None,
        tenant_max_wait_s: float | None = None,
        reservation_id: str | None = None,
    ) -> Admission:
        """Reserve the earliest slot at which every dimension can take ``costs``.

        ``costs`` maps dimension names to units (missing ones cost 0) or lists them in
        the group's order. With ``max_wait_s``, a slot further away than that is not
        reserved (``reserved`` is False and ``wait_s`` tells how far it was). With
        ``tenant_max_wait_s`` too, neither is a slot that a tenant's own cap sets
        further away than that: reserving it would move the group's schedule to that
        slot for everyone (such a request belongs in the fair queue).

        Raises CostExceedsCapacityError at once for a cost no bucket can ever hold.
        """
        plan = self._plan(group)
        vector, texts = cost_texts(group, plan, costs)
        if reservation_id is not None and (
            not reservation_id or not ID_FORBIDDEN.isdisjoint(reservation_id)
        ):
            raise ReservationHandleError(
                f"a reservation id must be non-empty, without / | or ,: {reservation_id!r}"
            )
        rid = reservation_id or os.urandom(10).hex()
        others = self._calendars.others(group, plan)
        bound: float | str = -1 if max_wait_s is None else max_wait_s * 1000
        if max_wait_s is not None and tenant_max_wait_s is not None:
            bound = f"{bound!r}:{tenant_max_wait_s * 1000!r}"
        try:
            reply = self.scripts.run(
                self.scripts.admit,
                plan.admit_keys,
                rid,
                bound,
                plan.spec,
                *texts,
                *others,
            )
        except redis.RedisError as exc:
            raise StorageError(f"redis admission failed: {exc}") from exc
        code_, binding = int(reply[0]), int(reply[5])
        if code_ == 2:
            i = plan.order[binding - 1]
            raise CostExceedsCapacityError(group.name, plan.names[i], vector[i], plan.usable[i])
        if code_ == 3:  # our clock is days away from the server's: rebuild and retry once
            self._calendars.clear()
            return self.admit(
                group,
                vector,
                max_wait_s=max_wait_s,
                tenant_max_wait_s=tenant_max_wait_s,
                reservation_id=rid,
            )
        wait_us = int(reply[1])
        if code_ == 4:  # work waits in the group's fair queue: a bounded caller joins it
            now_ms = absolute_ms(reply[3])
            return Admission(group.name, rid, False, 0.0, now_ms, now_ms, False, "queue")
        if binding > 0:
            binding_name: str | None = plan.names[plan.order[binding - 1]]
        else:
            binding_name = "pause" if wait_us > 0 else None
        return Admission(
            group.name,
            self._handle(plan, rid, int(reply[2]), reply[6]) if code_ == 0 else rid,
            code_ == 0,
            max(0, wait_us) / 1e6,
            absolute_ms(reply[2]),
            absolute_ms(reply[3]),
            bool(int(reply[4])) or not group.concurrency,
            binding_name,
        )

    def _handle(self, plan: Plan, rid: str, slot_us: int, record: bytes | str) -> str:
        expiry_ms = slot_us // 1000 + self.record_ttl_ms
        return f"{rid}/{plan.tag}{os.urandom(4).hex()}/{expiry_ms}/{as_text(record)}"

    def queue_entry(
        self, group: LimitGroup, costs: Mapping[str, float] | Sequence[float]
    ) -> QueueEntry:
        """What the fair scheduler (``throttle/scheduler.py``) stores to admit a request
        later with exactly :meth:`admit`'s checks. Raises CostExceedsCapacityError at
        once for a cost no bucket can ever hold."""
        plan = self._plan(group)
        vector, texts = cost_texts(group, plan, costs)
        return queue_entry(plan, vector, texts, self._calendars.others(group, plan))

    def handle_for(self, group: LimitGroup, reservation_id: str, slot_us: int, record: str) -> str:
        """The handle of a reservation the fair scheduler made (as :meth:`admit` returns
        it in :attr:`Admission.reservation`)."""
        return self._handle(self._plan(group), reservation_id, slot_us, record)

    def begin(self, group: LimitGroup, reservation: str) -> Begin:
        """At the slot, as the request is about to leave: check the pause gate, move its
        sliding-log entries to now (the provider counts it from its arrival), take the
        concurrency lease.

        A group with neither sliding logs nor a concurrency cap has only its gate to
        check: one plain read of the pause, not the script. The gate is open from the
        slot on if no pause reaches past it (a pause made after the reservation ends
        later than the reservation was made, and no later than the slot lets it go);
        only otherwise does the script decide on the server's clock."""
        plan = self._plan(group)
        if not plan.sliding and not group.concurrency:
            handle = Handle.parse(reservation, plan)
            if handle is not None:
                slot_ms = int(handle.expiry_ms) - self.record_ttl_ms  # floor of the slot
                with _storage_errors("HGET"):
                    paused_until = cast(Any, self.client.hget(plan.state_key, fields.PAUSE))
                if paused_until is None or float(paused_until) <= slot_ms:
                    return Begin(BeginOutcome.GO, 0.0, None)
        keys, args = begin_keys_args(group, plan, reservation)
        with _storage_errors("begin"):
            code, wait_us, now_us = self.scripts.begin(keys=keys, args=args)
        return Begin(BeginOutcome(int(code)), int(wait_us) / 1e6, absolute_ms(now_us))

    def cancel(self, group: LimitGroup, reservation: str) -> float | None:
        """Give a reservation back (its handle, :attr:`Admission.reservation`). Returns
        the server time (ms) it was done at, or None if the reservation was already
        settled, cancelled or expired."""
        plan = self._plan(group)
        handle = Handle.parse(reservation, plan)
        if handle is None:
            return None
        with _storage_errors("cancel"):
            done, now_us = self.scripts.cancel(
                keys=self._keys(group, plan, handle.token), args=cancel_args(plan, handle)
            )
        return absolute_ms(now_us) if int(done) else None

    def settle(
        self,
        group: LimitGroup,
        reservation: str,
        deltas: Mapping[str, float] | None = None,
        observed: Mapping[str, Observed] | None = None,
    ) -> Settled | None:
        """Finish a reservation (its handle, :attr:`Admission.reservation`): adjust each
        dimension by ``actual - reserved``, apply what the provider's headers said
        (``observed``, by dimension name), raise the AIMD multiplier after a clean window,
        and release the concurrency lease. A positive delta may put a bucket into debt.
        Returns None if the reservation was already settled, cancelled or expired
        (nothing changes then)."""
        plan = self._plan(group)
        handle = Handle.parse(reservation, plan)
        if handle is None:
            return None
        args = settle_args(group, plan, handle, deltas or {}, observed or {})
        with _storage_errors("settle"):
            done, now_us, multiplier_e6 = self.scripts.settle(
                keys=self._keys(group, plan, handle.token), args=args
            )
        if not int(done):
            return None
        return Settled(absolute_ms(now_us), int(multiplier_e6) / 1e6)

    def pause(self, group: LimitGroup, duration_s: float, *, rate_limited: bool = False) -> Pause:
        """Close the group's gate for ``duration_s`` from the server's now, for every
        worker. Never shortens a longer pause already in force.

        ``rate_limited``: the pause answers a provider 429. The group's AIMD multiplier
        then decreases once per epoch (the 429s until this pause is over and one clean
        window has passed count once), and the queue of reservations, parked tasks
        included, stretches to the lower rate."""
        plan = self._plan(group)
        args = pause_args(plan, duration_s, rate_limited)
        with _storage_errors("pause"):
            _extended, until_us, now_us, decreased, multiplier_e6 = self.scripts.pause(
                keys=[plan.state_key, plan.parked_key], args=args
            )
        return Pause(
            absolute_ms(until_us), absolute_ms(now_us), bool(decreased), int(multiplier_e6) / 1e6
        )

    def server_time_ms(self) -> float:
        """The Redis server's clock, in ms."""
        with _storage_errors("TIME"):
            seconds, micros = cast(tuple[int, int], self.client.time())
        return int(seconds) * 1000 + int(micros) / 1000

    def start_wait_s(self, group: LimitGroup, costs: Mapping[str, float]) -> tuple[float, int]:
        """How long a request of ``costs`` would wait to start in ``group`` if admitted
        now (its GCRA buckets and the pause gate; infinite while work waits in its fair
        queue), and how many items wait there. One read (two on a Redis Cluster, which
        pipelines no TIME: the clock is then read from the node owning the group's
        slot); to choose among groups (the credentials of one)."""
        key, names = self.start_wait_read(group)
        with _storage_errors("HMGET"):
            server_time: Any
            values: Any
            if is_cluster(self.client):
                cluster: Any = self.client  # redis-py leaves these calls untyped
                node = cluster.get_node_from_key(key)
                server_time = cluster.execute_command("TIME", target_nodes=node)
                values = cluster.hmget(key, names)
            else:
                pipe = self.client.pipeline(transaction=False)
                pipe.time()
                pipe.hmget(key, names)
                server_time, values = pipe.execute()
        start = self.start_wait_from(group, costs, server_time, values)
        return (math.inf if start.queued > 0 else start.bucket_wait_s), start.queued

    def start_wait_read(self, group: LimitGroup) -> tuple[str, list[str]]:
        """What :meth:`start_wait_from` reads: ``TIME`` and ``HMGET key *fields`` (for
        callers with their own, asyncio, client: the gateway)."""
        plan = self._plan(group)
        return plan.state_key, start_wait_fields(group, plan)

    def start_wait_from(
        self,
        group: LimitGroup,
        costs: Mapping[str, float],
        server_time: Sequence[Any],
        values: Sequence[Any],
    ) -> StartWait:
        """The start of a request of ``costs`` from the read of :meth:`start_wait_read`
        (``server_time``: TIME's reply, ``values``: HMGET's)."""
        return start_wait(group, self._plan(group), costs, server_time, values)

    def queued_work(self, group: str) -> int:
        """Items waiting in ready flows of ``group``'s fair queue (the state's ``b``,
        kept by ``schedule.lua``): while above 0, new work joins the queue."""
        with _storage_errors("HGET"):
            value = self.client.hget(self.keys.state(group), fields.QUEUED)
        return int(cast(Any, value) or 0)

"""The fair scheduler: late-bound capacity for work that cannot start at once.

A request that cannot start within the hold horizon (or finds work already queued in
its group) is pushed into its flow, the pair (lane, tenant), in Redis. A scheduling
pass (``throttle/lua/schedule.lua``) releases queued items in fair order at the
moment the group's limits can take them: weighted start-time fair queueing between
tenants, strict priority between lanes with minimum shares for the lower ones, and
the reservation of each released item made by the limiter's own admission in the same
atomic step. Nothing queued holds capacity. See ``docs/fair-scheduler.md``.

Example::

    scheduler = FairScheduler(limiter, lanes)
    done = scheduler.push(group, item)            # queues it and runs one pass
    for item in done.released:                   # publish them (or run the own one)
        ...
    later = scheduler.run_pass(group)            # a dispatcher, at ``done.due_in_s``
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis

from throttle import fields
from throttle.config import Lane, tenant_dimension
from throttle.connect import is_cluster
from throttle.errors import StorageError
from throttle.limiter import EPOCH_MS, RedisLimiter, as_text
from throttle.limits import LimitGroup
from throttle.wake import WakeWatchers

#: Most items one pass releases; a pass that hits it asks to run again at once.
PASS_LIMIT = 200

#: The statistics a pass keeps (``schedule.lua``'s STATS): the upper bounds of its
#: wait histogram's buckets (ms; one more bucket beyond the last), and the half-life
#: of every count in it and of the released cost.
WAIT_BOUNDS_MS = (10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000)
STATS_HALF_LIFE_MS = 60000


@dataclass(frozen=True, slots=True)
class BrokerOnServer:
    """A Redis broker on the limiter's own server: a pass then pushes ready-made
    messages onto its queues itself (``workers/message.py``)."""

    broker_db: int
    own_db: int
    #: The broker's hash and index of unacknowledged messages (kombu's Redis transport,
    #: with its key prefix). A pushed message is recorded there as well: kombu's Redis
    #: transport records a message a worker pops only after the pop, so a worker killed
    #: in between would lose it; recorded ahead, kombu restores it after its visibility
    #: timeout (and a worker that does record it overwrites the record). '': not
    #: recorded.
    unacked_hash: str = ""
    unacked_index: str = ""

    def as_arg(self) -> str:
        """schedule.lua's ARGV[7]: 'broker db,own db[,unacked hash,unacked index]'."""
        dbs = f"{self.broker_db},{self.own_db}"
        names = (self.unacked_hash, self.unacked_index)
        if all(names) and not any("," in name for name in names):
            return f"{dbs},{names[0]},{names[1]}"
        return dbs


@dataclass(frozen=True, slots=True)
class QueuedItem:
    """One request to queue. ``payload`` is what publishing it later needs (JSON)."""

    item_id: str
    costs: Mapping[str, float] | Sequence[float]
    lane: str
    tenant: str | None
    weight: float
    #: Give up waiting at this time, ms on the Redis server's clock (0: never).
    deadline_ms: float
    #: What publishing it later needs, as text (the caller's serialisation).
    payload: str
    #: Keep this tenant's share and waits apart in the statistics (for a bounded set:
    #: the tenants with their own plan); other tenants are summed per lane as tenant
    #: ``*``. Requests without a tenant are always kept apart.
    stats_apart: bool = False


@dataclass(frozen=True, slots=True)
class ReleasedItem:
    item_id: str
    payload: str
    #: The reservation's handle (as RedisLimiter.admit gives it), None when released
    #: without one: past its deadline ("expired") or not admissible ("refused").
    reservation: str | None
    slot_ms: float
    #: Seconds from the pass until the slot.
    wait_s: float
    lease: bool
    reason: str
    #: The item the push queued, released by the same call: its caller runs it (it is
    #: not in the releasing set and needs no claim).
    own: bool
    #: Its stored payload was a ready-made broker message, and the pass pushed it onto
    #: its queue (``payload`` is then empty): nothing is left to publish or claim.
    published: bool = False


@dataclass(frozen=True, slots=True)
class SchedulePass:
    now_ms: float
    #: When the next pass is due, ms on the server's clock; None: only when woken.
    due_ms: float | None
    released: tuple[ReleasedItem, ...]

    @property
    def due_in_s(self) -> float | None:
        return None if self.due_ms is None else max(0.0, self.due_ms - self.now_ms) / 1000


def flow_id(lane: str, tenant: str | None) -> str:
    """A flow's id: its lane and the tenant's escaped name (one to one, bounded)."""
    if tenant is None:
        return f"{lane}|"
    return f"{lane}|{tenant_dimension(tenant, '')[len('tenant.') : -1]}"


class FairScheduler:
    """Queues and releases the requests of every group, fairly; safe across processes."""

    def __init__(
        self,
        limiter: RedisLimiter,
        lanes: Sequence[Lane],
        *,
        release_lead_s: float = 0.1,
        queue_ttl_s: float = 86400.0,
        broker: BrokerOnServer | None = None,
    ) -> None:
        """``broker``: given when the broker is a Redis on the limiter's server; a pass
        then pushes ready-made messages onto the broker's queues itself."""
        self.limiter = limiter
        self.publishes = broker is not None
        self._dbs = "" if broker is None else broker.as_arg()
        self.keys = limiter.keys
        self.release_lead_ms = int(release_lead_s * 1000)
        self.queue_ttl_ms = int(queue_ttl_s * 1000)
        self._lanes = ";".join(f"{lane.name},{lane.credit_rate!r}" for lane in lanes)
        self._lane_names = frozenset(lane.name for lane in lanes)
        self._watchers: WakeWatchers | None = None
        #: Per group: whether its last push found it saturated past the release lead
        #: (the next push then tries enqueue.lua, which skips the pass).
        self._saturated: dict[str, bool] = {}

    def stop_waking(self) -> None:
        """End the wake watchers' threads, if any (a Cluster's dispatcher on its way out)."""
        if self._watchers is not None:
            self._watchers.stop()
            self._watchers = None

    def _keys(self, group: str) -> list[str]:
        k = self.keys
        return [
            k.state(group),
            k.leases(group),
            k.scheduler(group),
            k.parked_payloads(group),
            k.releasing(group),
            k.blocked(group),
            k.wake(group),
        ]

    def _args(self, group: str, push_id: str) -> list[Any]:
        return [
            self.keys.group_prefix(group),
            self._lanes,
            self.release_lead_ms,
            PASS_LIMIT,
            self.queue_ttl_ms,
            push_id,
            self._dbs,
        ]

    def push(self, group: LimitGroup, item: QueuedItem) -> SchedulePass:
        """Queue ``item`` in its flow and run one pass. Raises CostExceedsCapacityError
        at once for a cost no bucket of the group can ever hold."""
        if item.lane not in self._lane_names:
            raise ValueError(f"unknown lane {item.lane!r}")
        entry = self.limiter.queue_entry(group, item.costs)
        deadline = max(0, int(item.deadline_ms - EPOCH_MS)) if item.deadline_ms else 0
        meta = ",".join([repr(entry.dominant_share), str(deadline), *entry.cost_texts])
        args = [
            *self._args(group.name, item.item_id),
            item.lane,
            flow_id(item.lane, item.tenant),
            repr(float(item.weight)),
            meta,
            item.payload,
            entry.spec,
            entry.others,
            entry.tenant_bindings,
            "1" if item.stats_apart or item.tenant is None else "",
        ]
        if self._saturated.get(group.name, True):
            queued = self._enqueue(group, args)
            if queued is not None:
                return queued
        done = self._run(group, args)
        self._saturated[group.name] = not done.released and (
            done.due_ms is not None and done.due_ms - done.now_ms > self.release_lead_ms
        )
        return done

    def _enqueue(self, group: LimitGroup, args: list[Any]) -> SchedulePass | None:
        """Queue a push behind a group saturated past the release lead, without a pass
        (enqueue.lua); None when the push needs one (schedule.lua)."""
        scripts = self.limiter.scripts
        try:
            reply = scripts.run(scripts.enqueue, self._keys(group.name), *args)
        except redis.RedisError as exc:
            raise StorageError(f"redis enqueue failed: {exc}") from exc
        if not int(reply[0]):
            self._saturated[group.name] = False
            return None
        now_ms = EPOCH_MS + int(reply[1]) / 1000
        return SchedulePass(now_ms, EPOCH_MS + int(reply[2]) / 1000, ())

    def run_pass(self, group: LimitGroup) -> SchedulePass:
        """Release what can start now in ``group``."""
        return self._run(group, self._args(group.name, ""))

    def _run(self, group: LimitGroup, args: list[Any]) -> SchedulePass:
        scripts = self.limiter.scripts
        try:
            reply = scripts.run(scripts.schedule, self._keys(group.name), *args)
        except redis.RedisError as exc:
            raise StorageError(f"redis schedule failed: {exc}") from exc
        now_us, due_us = int(reply[0]), int(reply[1])
        now_ms = EPOCH_MS + now_us / 1000
        released = []
        for at in range(3, 3 + 7 * int(reply[2]), 7):
            item_id, payload, slot_us, lease, record, reason, own = reply[at : at + 7]
            item_id, record, payload = as_text(item_id), as_text(record), as_text(payload)
            published = payload == "\x1b"
            slot_us = int(slot_us)
            handle = self.limiter.handle_for(group, item_id, slot_us, record) if record else None
            slot_ms = EPOCH_MS + slot_us / 1000 if record else now_ms
            released.append(
                ReleasedItem(
                    item_id,
                    "" if published else payload,
                    handle,
                    slot_ms,
                    max(0.0, slot_ms - now_ms) / 1000,
                    bool(int(lease)),
                    as_text(reason),
                    bool(int(own)),
                    published,
                )
            )
        due_ms = EPOCH_MS + due_us / 1000 if due_us >= 0 else None
        return SchedulePass(now_ms, due_ms, tuple(released))

    def wait_for_wake(self, groups: Sequence[str], timeout_s: float) -> str | None:
        """Block until a push wakes one of ``groups`` (its name), or ``timeout_s``. On
        a Redis Cluster, groups live in different slots: one watcher thread per group
        blocks on its own list (``throttle/wake.py``)."""
        keys = {self.keys.wake(g): g for g in groups}
        if len(keys) > 1 and is_cluster(self.limiter.client):
            if self._watchers is None:
                self._watchers = WakeWatchers(self.limiter.client, keys)
            return self._watchers.wait(timeout_s)
        try:
            reply = self.limiter.client.blpop(list(keys), timeout=max(0.001, timeout_s))
        except redis.RedisError as exc:
            raise StorageError(f"redis wake wait failed: {exc}") from exc
        if not reply:
            return None
        key = as_text(cast(Sequence[Any], reply)[0])
        return keys.get(key)

    def queued(self, group: str) -> tuple[int, int]:
        """(items queued, of them in ready flows) in a group."""
        try:
            n, r = cast(
                list[Any],
                self.limiter.client.hmget(
                    self.keys.scheduler(group), [fields.Q_ITEMS, fields.Q_READY]
                ),
            )
        except redis.RedisError as exc:
            raise StorageError(f"redis hmget failed: {exc}") from exc
        return int(n or 0), int(r or 0)

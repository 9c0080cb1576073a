"""The dispatcher: runs the fair scheduler's passes and publishes what they release.

Every worker runs one (a bootstep thread); the atomic scripts in Redis keep any number
of them from releasing one item twice. Each group's next pass is due when its last
pass said (the slot at which the group's limits take the next item, minus the release
lead); a push that brings it forward, or a settle that frees a concurrency lease while
work is queued, wakes one dispatcher through the group's wake list (``BLPOP``). While
nothing is queued a dispatcher only wakes every ``dispatcher_interval_s``: no poll.

It also drains the parking lot of older versions (tasks parked with a reserved slot,
and released items that no worker claimed in time), at that same slow interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from throttle.config import Config
from throttle.errors import StorageError
from throttle.parking import ParkingLot
from throttle.scheduler import FairScheduler
from workers.app_config import app_config
from workers.context import set_pool_threads, worker_context
from workers.publish import publish_released, republisher
from workers.thread_step import ThreadStep

log = logging.getLogger(__name__)

#: Redis times a BLPOP out on its own cron (10 times a second by default), so a timed
#: wait can end up to about 0.1 s late. Waits shorter than this are slept here, and a
#: longer one blocks only until this much before its end.
SHORT_WAIT_S = 0.25

#: A pass runs this fraction of the release lead before the group's next slot. It
#: releases every item whose slot falls within the lead after it: at a rate of r per
#: second about 1 + 0.8 x lead x r items per pass (one per pass if it ran a whole lead
#: early), and the first of them still reaches its worker before its slot.
WAKE_AHEAD_OF_LEAD = 0.2

#: publish(payload, wait_at_release_s, group, entry_id, reservation, slot_ms): the
#: worker that receives the task claims ``entry_id`` in ``group`` (ParkingLot.claim).
Publish = Callable[..., None]


class Dispatcher:
    """Releases queued work of every configured group, fairly and on time."""

    def __init__(
        self,
        config: Config,
        parking: ParkingLot,
        publish: Publish,
        scheduler: FairScheduler | None = None,
    ) -> None:
        self.config = config
        self.parking = parking
        self.publish = publish
        self.scheduler = scheduler
        self.released = 0

    def _publish(self, payload: Mapping[str, Any], wait_s: float, group: str, entry: str) -> None:
        """Publish one entry of the parking lot (it holds its reservation, if any)."""
        try:
            self.publish(payload, wait_s, group, entry)
            if "message" in payload:  # pushed as is: no worker claims it
                self.parking.forget(group, entry)
        except Exception:  # a broken payload must not block the others; it goes stale
            log.exception("could not publish entry %s of %s", entry, group)
            return
        self.released += 1

    def run_pass(self, group: str) -> float:
        """One scheduling pass of ``group``; returns seconds until its next one."""
        assert self.scheduler is not None
        worker = self.config.worker
        named = self.config.limit_group_named(group)
        assert named is not None, group
        limit_group = self.config.limit_group(named[0], None, named[1])
        done = self.scheduler.run_pass(limit_group)
        publish_released(self.publish, group, done)
        self.released += len(done.released)
        due_in_s = done.due_in_s
        if due_in_s is None:
            return worker.dispatcher_interval_s
        wake_in_s = due_in_s - WAKE_AHEAD_OF_LEAD * worker.release_lead_s
        return min(worker.dispatcher_interval_s, max(0.0, wake_in_s))

    def run_once(self) -> float:
        """Release what is due in the parking lot; return how long to sleep (s)."""
        worker = self.config.worker
        sleep_s = worker.dispatcher_interval_s
        for group in self.config.limit_group_names():
            batch = self.parking.take_due(
                group, lead_s=worker.release_lead_s, limit=500, stale_s=worker.release_stale_s
            )
            for entry_id, payload in batch.entries:
                slot_ms = float(payload.get("slot_ms", batch.now_ms))
                wait_s = min(max(0.0, slot_ms - batch.now_ms) / 1000, worker.release_lead_s)
                self._publish(payload, wait_s, group, entry_id)
            if len(batch.entries) == 500:
                sleep_s = 0.0
            elif batch.next_slot_ms is not None:
                due_in_s = (batch.next_slot_ms - batch.now_ms) / 1000 - worker.release_lead_s
                sleep_s = min(sleep_s, max(0.0, due_in_s))
        return sleep_s

    def run(self, stop: threading.Event) -> None:
        groups = list(self.config.limit_group_names())
        due = dict.fromkeys(groups, 0.0)  # monotonic time of each group's next pass
        parked_at = 0.0
        while not stop.is_set():
            try:
                now = time.monotonic()
                if self.scheduler is not None:
                    for group in groups:
                        if due[group] <= now:
                            due[group] = now + self.run_pass(group)
                if parked_at <= now:
                    parked_at = now + self.run_once()
                wait_s = min([parked_at, *due.values()]) - time.monotonic()
                if self.scheduler is None or wait_s <= SHORT_WAIT_S:
                    stop.wait(max(0.0, wait_s))
                    continue
                woken = self.scheduler.wait_for_wake(groups, wait_s - SHORT_WAIT_S)
                if woken is not None:
                    due[woken] = 0.0
            except StorageError as exc:
                log.warning("dispatcher: %s; retrying in 1 s", exc)
                stop.wait(1.0)
            except Exception:  # never let one bad pass end every later release
                log.exception("dispatcher: unexpected error; retrying in 1 s")
                stop.wait(1.0)
        if self.scheduler is not None:
            self.scheduler.stop_waking()


class DispatcherStep(ThreadStep):
    """Runs a :class:`Dispatcher` thread for the life of the worker."""

    thread_name = "llm-throttle-dispatcher"

    def create(self, worker: Any) -> DispatcherStep:
        pool = str(getattr(worker, "pool_cls", "")).lower()
        set_pool_threads(worker.concurrency if "thread" in pool else 1)
        return self

    def target(self, worker: Any) -> Callable[[threading.Event], None]:
        app = worker.app
        context = worker_context(app)
        dispatcher = Dispatcher(
            app_config(app), context.parking, republisher(app), context.scheduler
        )
        return dispatcher.run

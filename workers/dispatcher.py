"""The dispatcher: publishes parked tasks again just before their slot.

Every worker runs one (a bootstep thread); the atomic take in Redis keeps any number of
them from releasing one task twice. It sleeps until the earliest parked slot (minus the
release lead), capped by ``dispatcher_interval_s`` so newly parked tasks are seen soon.

A parked task's slot is its score in the parked zset, which a change of the group's rate
moves (``throttle/lua/lib/rescale.lua``); the slot in its payload is the one it was
parked with. A task taken is due within the release lead by its score, so it never
waits longer than the lead: after the queue sped up (a learned rise, an AIMD increase)
it must not sleep, or park again, until its old, later slot.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from celery import bootsteps

from throttle.config import Config
from throttle.errors import StorageError
from throttle.parking import ParkingLot

log = logging.getLogger(__name__)

#: publish(payload, wait_at_release_s, group, entry_id): the worker that receives the
#: task claims ``entry_id`` in ``group`` (ParkingLot.claim).
Publish = Callable[[Mapping[str, Any], float, str, str], None]


class Dispatcher:
    """Releases due parked tasks of every configured group, in slot order."""

    def __init__(self, config: Config, parking: ParkingLot, publish: Publish) -> None:
        self.config = config
        self.parking = parking
        self.publish = publish
        self.released = 0

    def run_once(self) -> float:
        """Release what is due; return how long to sleep before the next round (s)."""
        worker = self.config.worker
        sleep_s = worker.dispatcher_interval_s
        for group in self.config.groups:
            batch = self.parking.take_due(
                group, lead_s=worker.release_lead_s, limit=500, stale_s=worker.release_stale_s
            )
            published = 0  # each stays in `releasing` until its worker claims it
            for entry_id, payload in batch.entries:
                slot_ms = float(payload.get("slot_ms", batch.now_ms))
                wait_s = min(max(0.0, slot_ms - batch.now_ms) / 1000, worker.release_lead_s)
                try:
                    self.publish(payload, wait_s, group, entry_id)
                except Exception:  # a broken payload must not block the others
                    log.exception("could not publish parked entry %s of %s", entry_id, group)
                    continue
                published += 1
            self.released += published
            if len(batch.entries) == 500:
                sleep_s = 0.0
            elif batch.next_slot_ms is not None:
                due_in_s = (batch.next_slot_ms - batch.now_ms) / 1000 - worker.release_lead_s
                sleep_s = min(sleep_s, max(0.0, due_in_s))
        return sleep_s

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                sleep_s = self.run_once()
            except StorageError as exc:
                log.warning("dispatcher: %s; retrying in 1 s", exc)
                sleep_s = 1.0
            stop.wait(max(0.002, sleep_s))


class DispatcherStep(bootsteps.StartStopStep):
    """Runs a :class:`Dispatcher` thread for the life of the worker."""

    requires: ClassVar[set[str]] = {"celery.worker.components:Pool"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def create(self, worker: Any) -> DispatcherStep:
        from workers.context import set_pool_threads

        pool = str(getattr(worker, "pool_cls", "")).lower()
        set_pool_threads(worker.concurrency if "thread" in pool else 1)
        return self

    def start(self, worker: Any) -> None:
        from workers.app import app_config
        from workers.context import worker_context
        from workers.publish import republisher

        app = worker.app
        context = worker_context(app)
        dispatcher = Dispatcher(app_config(app), context.parking, republisher(app))
        self._thread = threading.Thread(
            target=dispatcher.run, args=(self._stop,), name="llm-throttle-dispatcher", daemon=True
        )
        self._thread.start()

    def stop(self, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def shutdown(self, worker: Any) -> None:
        self.stop(worker)

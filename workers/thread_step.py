"""A Celery bootstep that runs one background thread for the life of the worker."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, ClassVar

from celery import bootsteps


class ThreadStep(bootsteps.StartStopStep):
    """Starts ``target(stop)`` in a daemon thread named ``thread_name`` when the worker
    starts, and sets ``stop`` and joins it (up to ``join_timeout_s``) when it stops.
    Subclasses say what runs in :meth:`target`."""

    requires: ClassVar[set[str]] = {"celery.worker.components:Pool"}
    thread_name: ClassVar[str] = "llm-throttle-step"
    join_timeout_s: ClassVar[float] = 5.0

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def target(self, worker: Any) -> Callable[[threading.Event], None]:
        raise NotImplementedError

    def start(self, worker: Any) -> None:
        self._thread = threading.Thread(
            target=self.target(worker), args=(self._stop,), name=self.thread_name, daemon=True
        )
        self._thread.start()

    def stop(self, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.join_timeout_s)

    def shutdown(self, worker: Any) -> None:
        self.stop(worker)

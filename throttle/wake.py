"""Waiting for a push to wake a dispatcher, on a Redis Cluster.

On one server a dispatcher blocks on every group's wake list at once (one ``BLPOP``
over all of them). On a Cluster that is a cross-slot command: each group's keys live in
the slot of its hash tag, and ``BLPOP`` refuses keys of several slots. Here one thread
per group blocks on that group's list alone (``BLPOP`` of one key, on the node owning
it) and hands the group's name to the dispatcher. Nothing polls: each thread sits in
``BLPOP`` until a push or its block time ends, then blocks again.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Mapping

import redis

from throttle.connect import RedisClient

log = logging.getLogger(__name__)

#: How long one BLPOP of a watcher blocks before it checks whether to stop.
BLOCK_S = 1.0


class WakeWatchers:
    """One blocking thread per wake list; :meth:`wait` returns the next group woken."""

    def __init__(self, client: RedisClient, groups_by_key: Mapping[str, str]) -> None:
        self._client = client
        self._woken: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(
                target=self._watch,
                args=(key, group),
                name=f"llm-wake-{group}",
                daemon=True,
            )
            for key, group in groups_by_key.items()
        ]
        for thread in self._threads:
            thread.start()

    def _watch(self, key: str, group: str) -> None:
        while not self._stop.is_set():
            try:
                reply = self._client.blpop([key], timeout=BLOCK_S)
            except redis.RedisError as exc:  # a node down or failing over: try again
                log.debug("wake watcher of %s: %s", group, exc)
                self._stop.wait(1.0)
                continue
            if reply:
                self._woken.put(group)

    def wait(self, timeout_s: float) -> str | None:
        """The next group a push woke, or None after ``timeout_s``."""
        try:
            return self._woken.get(timeout=max(0.0, timeout_s))
        except queue.Empty:
            return None

    def stop(self) -> None:
        self._stop.set()

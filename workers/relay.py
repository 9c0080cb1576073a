"""The relay of a streamed completion: its events go from the worker that calls the
provider to whoever serves the caller (the gateway), through a Redis stream keyed by
the task id, as they arrive.

Entries, in order: ``w`` (the name of the worker relaying, as its heartbeat has it:
a reader that hears nothing more can tell a dead worker from a slow provider), ``d``
(raw server-sent events, as the provider sent them), then
one ``end`` (JSON: the usage settled) or ``error`` (JSON: ``type``, ``message``,
``status``). Real providers send about one token per read, so writes are batched by
time: the first read goes out at once, later ones at most every ``flush_every_s``
(25 ms: a few reads per ``XADD`` at the usual 30-100 tokens/s, a delay no reader
sees), a thread of the relay sending what waits when no further read comes. Each
write is one pipelined ``XADD`` (or two, with the last entry) and ``EXPIRE``: the
stream expires ``RELAY_TTL_S`` after its last write, however long the answer runs.
Nothing for calls that do not stream.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis

from throttle.connect import RedisClient
from throttle.errors import ThrottleError
from throttle.providers.sse import SseEvent
from throttle.providers.streaming import is_usage_only

log = logging.getLogger(__name__)

#: Seconds a relay stream lives after its last entry (a caller that went away).
RELAY_TTL_S = 600
#: The longest a read waits for the ones after it before it is sent.
FLUSH_EVERY_S = 0.025


def relay_key(prefix: str, task_id: str) -> str:
    """The Redis stream of task ``task_id``'s events."""
    return f"{prefix}:relay:{task_id}"


def wants_usage_chunk(params: Mapping[str, Any]) -> bool:
    """Whether the caller asked for OpenAI's usage chunk (``stream_options``); the
    worker always asks the provider for it, to settle on it."""
    options = params.get("stream_options")
    return isinstance(options, Mapping) and options.get("include_usage") is True


def relayed_error(exc: BaseException) -> dict[str, Any]:
    """What the reader learns of a failure: a typed error's name, message and status;
    of any other, only that the worker failed (its text may hold anything)."""
    if isinstance(exc, ThrottleError):
        return {
            "type": type(exc).__name__,
            "message": str(exc)[:1000],
            "status": getattr(exc, "status", None),
        }
    return {"type": "InternalError", "message": "the worker failed", "status": None}


class StreamRelay:
    """Writes one task's events to its relay stream; thread-safe."""

    def __init__(
        self,
        client: RedisClient,
        key: str,
        *,
        keep_usage_chunk: bool,
        worker: str | None = None,
        ttl_s: int = RELAY_TTL_S,
        flush_every_s: float = FLUSH_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.key = key
        self.keep_usage_chunk = keep_usage_chunk
        self.worker = worker
        self.ttl_s = ttl_s
        self.flush_every_s = flush_every_s
        self._clock = clock
        #: Writes made (round trips to Redis).
        self.writes = 0
        self._pending: list[bytes] = []
        self._written_at: float | None = None  # None: nothing written yet
        self._closed = False
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._flusher: threading.Thread | None = None

    def events(self, events: Sequence[SseEvent]) -> None:
        """Pass on the events of one read (the usage-only chunk only if asked for):
        at once if the last write is ``flush_every_s`` old, else with the next."""
        kept = [e.raw for e in events if self.keep_usage_chunk or not is_usage_only(e)]
        if not kept:
            return
        with self._lock:
            self._pending.extend(kept)
            now = self._clock()
            if self._written_at is None or now - self._written_at >= self.flush_every_s:
                self._write()
                return
            if self._flusher is None:
                self._flusher = threading.Thread(
                    target=self._flush_waiting, name="llm-throttle-relay", daemon=True
                )
                self._flusher.start()
            self._wake.notify()

    def end(self, usage: Mapping[str, Any] | None) -> None:
        """The answer is complete: what waits, then the ``end`` entry."""
        self._close({"end": json.dumps({"usage": usage})})

    def fail(self, exc: BaseException) -> None:
        """The task failed: what waits, then the error the reader stops with. Best
        effort: a Redis that is down loses it (the reader sees the task's result)."""
        try:
            self._close({"error": json.dumps(relayed_error(exc))})
        except redis.RedisError as relay_exc:
            log.warning("relay %s: could not pass on the failure: %s", self.key, relay_exc)

    def stop(self) -> None:
        """The run ends without an answer (a retry, a re-queue): send what waits, if
        anything, and stop the flusher; a later run of the task relays on."""
        self._close(None)

    def _close(self, last: dict[Any, Any] | None) -> None:
        with self._lock:
            self._closed = True
            self._wake.notify()
            if self._pending or last is not None:
                self._write(last)
        if self._flusher is not None and self._flusher is not threading.current_thread():
            self._flusher.join(timeout=1.0)

    def _write(self, last: dict[Any, Any] | None = None) -> None:
        """Under the lock: what waits, then ``last``, and the expiry, in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        if self.writes == 0 and self.worker is not None:
            pipe.xadd(self.key, {"w": self.worker})
        if self._pending:
            pipe.xadd(self.key, {"d": b"".join(self._pending)})
            self._pending = []
        if last is not None:
            pipe.xadd(self.key, last)
        pipe.expire(self.key, self.ttl_s)
        self._written_at = self._clock()
        self.writes += 1
        pipe.execute()

    def _flush_waiting(self) -> None:
        """The flusher: sends reads that wait when no further read comes in time."""
        with self._lock:
            while not self._closed:
                if not self._pending:
                    self._wake.wait()
                    continue
                assert self._written_at is not None
                left_s = self._written_at + self.flush_every_s - self._clock()
                if left_s > 0:
                    self._wake.wait(left_s)
                    continue
                try:
                    self._write()
                except redis.RedisError as exc:  # the task's next write raises it
                    log.warning("relay %s: %s", self.key, exc)

"""The relay of a streamed completion: its events go from the worker that calls the
provider to whoever serves the caller (the gateway), through a Redis stream keyed by
the task id, as they arrive.

Entries, in order: ``d`` (the raw server-sent events of one read from the provider,
as the provider sent them), then one ``end`` (JSON: the usage settled) or ``error``
(JSON: ``type``, ``message``, ``status``). The stream expires ``RELAY_TTL_S`` after
its last write. One ``XADD`` per read from the provider (with the first, the
``EXPIRE``), nothing for calls that do not stream.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import redis

from throttle.connect import RedisClient
from throttle.errors import ThrottleError
from throttle.providers.sse import SseEvent
from throttle.providers.streaming import is_usage_only

log = logging.getLogger(__name__)

#: Seconds a relay stream lives after its last entry (a caller that went away).
RELAY_TTL_S = 600


def relay_key(prefix: str, task_id: str) -> str:
    """The Redis stream of task ``task_id``'s events."""
    return f"{prefix}:relay:{task_id}"


def wants_usage_chunk(params: Mapping[str, Any]) -> bool:
    """Whether the caller asked for OpenAI's usage chunk (``stream_options``); the
    worker always asks the provider for it, to settle on it."""
    options = params.get("stream_options")
    return isinstance(options, Mapping) and options.get("include_usage") is True


class StreamRelay:
    """Writes one task's events to its relay stream."""

    def __init__(
        self, client: RedisClient, key: str, *, keep_usage_chunk: bool, ttl_s: int = RELAY_TTL_S
    ) -> None:
        self.client = client
        self.key = key
        self.keep_usage_chunk = keep_usage_chunk
        self.ttl_s = ttl_s
        self.entries = 0

    def events(self, events: Sequence[SseEvent]) -> None:
        """Pass on the events of one read (the usage-only chunk only if asked for)."""
        kept = [e.raw for e in events if self.keep_usage_chunk or not is_usage_only(e)]
        if kept:
            self._add({"d": b"".join(kept)})

    def end(self, usage: Mapping[str, Any] | None) -> None:
        self._add({"end": json.dumps({"usage": usage})})

    def fail(self, exc: ThrottleError) -> None:
        """The task failed: the reader stops with this error. Best effort: a Redis
        that is down loses it (the reader times out)."""
        error = {
            "type": type(exc).__name__,
            "message": str(exc)[:1000],
            "status": getattr(exc, "status", None),
        }
        try:
            self._add({"error": json.dumps(error)})
        except redis.RedisError as relay_exc:
            log.warning("relay %s: could not pass on the failure: %s", self.key, relay_exc)

    def _add(self, fields: dict[Any, Any]) -> None:
        self.entries += 1
        if self.entries > 1:
            self.client.xadd(self.key, fields)
            return
        pipe = self.client.pipeline(transaction=False)
        pipe.xadd(self.key, fields)
        pipe.expire(self.key, self.ttl_s)
        pipe.execute()

"""Reading a streamed task's relay stream (workers/relay.py) as entries arrive.

While the stream is quiet, the reader asks a :class:`Watch` once per ``block_ms``:
whether the task has finished without saying so in the relay (it failed before its
relay began, or the relay's last write was lost) and whether the worker that relays
it still beats (a worker killed mid-answer writes nothing more). Either way the
caller hears within about a second or the heartbeat's TTL, not at the request's
timeout.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, Protocol

from gateway.errors import GatewayError, from_exception, from_relayed
from throttle.errors import StorageError

#: ("d", the provider's raw events), then ("end", facts) or ("error", GatewayError).
Entry = tuple[str, Any]


class Watch(Protocol):
    async def finished(self) -> Entry | None:
        """The task's stored outcome as the relay's last entry, or None while it runs."""

    async def worker_alive(self, worker: str) -> bool:
        """Whether ``worker`` (a heartbeat name) is alive."""


def worker_lost(worker: str) -> GatewayError:
    return GatewayError(
        502, f"the worker relaying this answer ({worker}) stopped", "server_error", "worker_lost"
    )


async def relay_entries(
    client: Any, key: str, timeout_s: float, watch: Watch | None = None, block_ms: int = 1000
) -> AsyncIterator[Entry]:
    """Yield ``("d", bytes)`` for each relayed write, then one ``("end", facts)`` or
    ``("error", GatewayError)``; GatewayError 504 if nothing ends it within
    ``timeout_s``."""
    last_id, worker = "0-0", None
    final: Entry | None = None  # the task finished: read what is there, then end with it
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        left_ms = int((deadline - asyncio.get_running_loop().time()) * 1000)
        if left_ms <= 0:
            raise GatewayError(504, "timed out waiting for the completion", "server_error")
        block = None if final is not None else min(block_ms, left_ms)
        reply = await client.xread({key: last_id}, count=100, block=block)
        for _stream, entries in reply or ():
            for entry_id, fields in entries:
                last_id = entry_id
                for name, value in fields.items():
                    kind = name.decode() if isinstance(name, bytes) else name
                    if kind == "d":
                        yield "d", value
                    elif kind == "w":
                        worker = value.decode() if isinstance(value, bytes) else str(value)
                    elif kind == "error":
                        yield "error", from_relayed(json.loads(value))
                        return
                    elif kind == "end":
                        yield "end", json.loads(value)
                        return
        if final is not None:
            if not reply:  # all read: the task's outcome closes it
                yield final
                return
            continue
        if reply or watch is None:
            continue
        final = await watch.finished()
        if final is None and worker is not None and not await watch.worker_alive(worker):
            final = ("error", worker_lost(worker))


class TaskWatch:
    """A :class:`Watch` over the result backend (through the gateway's
    ResultListener) and the workers' heartbeats."""

    def __init__(self, listener: Any, client: Any, heartbeat_key: str, task_id: str) -> None:
        self.listener = listener
        self.client = client  # redis.asyncio on the limiter's Redis
        self.heartbeat_key = heartbeat_key
        self.task_id = task_id

    async def finished(self) -> Entry | None:
        try:
            outcome = await self.listener.outcome(self.task_id)
        except StorageError:
            return None  # the relay's own read will tell
        except Exception as exc:  # the task's own error, as AsyncResult.get raises it
            return "error", from_exception(exc)
        return None if outcome is None else ("end", {"usage": None})

    async def worker_alive(self, worker: str) -> bool:
        pipe = self.client.pipeline(transaction=False)
        pipe.time()
        pipe.zscore(self.heartbeat_key, worker)
        (seconds, micros), alive_until_ms = await pipe.execute()
        now_ms = int(seconds) * 1000 + int(micros) / 1000
        return alive_until_ms is not None and float(alive_until_ms) > now_ms

"""The task API for asyncio apps: ``await aenqueue(...)`` (issue 13).

From a FastAPI (or any asyncio) handler::

    from tasks import aenqueue
    completion = await aenqueue(provider="openai", model="gpt-4o-mini",
                                messages=[{"role": "user", "content": "Hello"}])
    result = await completion          # or: await completion.wait(timeout_s=60)
    result["response"]

``aenqueue`` validates and sends as ``enqueue`` does, on a worker thread (sending is a
quick blocking call). Waiting holds no thread: the result backend (Redis) publishes
each result on its key's channel, and the wait is a subscription on an asyncio Redis
client, read once more after subscribing so a result stored meanwhile is not missed.
A failed task raises its exception (typed, as ``AsyncResult.get`` would), a wait past
``timeout_s`` raises TimeoutError.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import Any

import redis.asyncio as aioredis
from celery import current_app, states
from celery.result import AsyncResult

from tasks.completion import enqueue
from throttle.connect import connect_async
from throttle.errors import StorageError


class AwaitableResult:
    """A queued completion: ``await`` it for its result."""

    def __init__(self, result: AsyncResult) -> None:
        self.result = result

    @property
    def id(self) -> str:
        return str(self.result.id)

    def __await__(self) -> Generator[Any, None, Any]:
        return self.wait().__await__()

    async def wait(self, timeout_s: float | None = None) -> Any:
        """The task's result once it is ready (its exception raised if it failed)."""
        backend = self.result.backend
        key = backend.get_key_for_task(self.id)
        client = connect_async(_url(backend))
        try:
            async with client.pubsub() as pubsub:
                await pubsub.subscribe(key)
                raw = await client.get(key)
                meta = _ready_meta(backend, raw)
                async with asyncio.timeout(timeout_s):
                    while meta is None:
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=None
                        )
                        if message is not None and message["type"] == "message":
                            meta = _ready_meta(backend, message["data"])
        except aioredis.RedisError as exc:
            raise StorageError(f"result backend unreachable: {exc}") from exc
        finally:
            await client.aclose()
        if meta["status"] == states.SUCCESS:
            return meta["result"]
        raise backend.exception_to_python(meta["result"])


def _url(backend: Any) -> str:
    """The result backend as the throttle's configuration names it (a Sentinel master
    too; Celery's own setting holds kombu's form of it)."""
    from workers.app import app_config

    return app_config(backend.app).result_backend


def _ready_meta(backend: Any, raw: bytes | None) -> dict[str, Any] | None:
    """The stored result if the task is finished (a parked or retried task is not)."""
    if raw is None:
        return None
    meta = backend.decode_result(raw)
    if meta.get("status") in states.READY_STATES:
        return dict(meta)
    return None


async def aenqueue(**kwargs: Any) -> AwaitableResult:
    """``enqueue`` for asyncio: the same arguments and checks; returns a result that
    ``await`` waits for."""
    app = current_app._get_current_object()  # the caller's app, in the sending thread too

    def send() -> AsyncResult:
        app.set_current()
        return enqueue(**kwargs)

    return AwaitableResult(await asyncio.to_thread(send))

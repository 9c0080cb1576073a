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
import contextlib
from collections.abc import Generator
from typing import Any

import redis.asyncio as aioredis
from celery import states
from celery.result import AsyncResult

from tasks.completion import enqueue, sending_app
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

    async def wait(
        self, timeout_s: float | None = None, listener: ResultListener | None = None
    ) -> Any:
        """The task's result once it is ready (its exception raised if it failed).
        With a ``listener``, the wait shares its connections (a server with many
        callers); without, it opens its own for the wait."""
        if listener is not None:
            return await listener.wait(self.id, timeout_s)
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
        return _outcome(backend, meta)


def _outcome(backend: Any, meta: dict[str, Any]) -> Any:
    if meta["status"] == states.SUCCESS:
        return meta["result"]
    raise backend.exception_to_python(meta["result"])


class ResultListener:
    """Waits for many tasks' results over two connections to the result backend: one
    subscription shared by every wait (each task's key is subscribed while someone
    waits for it) and one client for reads; a wait also reads its result after
    ``recheck_s`` and at growing intervals (a result published before its
    subscription took effect is not lost). For a server that answers many callers
    at once (the gateway); create and use it on one event loop."""

    def __init__(
        self, backend: Any, *, recheck_s: float = 2.0, unsubscribe_after_s: float = 0.1
    ) -> None:
        self.backend = backend
        self.recheck_s = recheck_s
        self.unsubscribe_after_s = unsubscribe_after_s
        self._leaving: set[str] = set()
        self._leaver: asyncio.Task[None] | None = None
        self._client = connect_async(_url(backend))
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._waiters: dict[str, list[asyncio.Future[dict[str, Any]]]] = {}
        # Subscribing concurrently would let each caller open its own connection,
        # and the subscriptions made on all but the last would never be read.
        self._lock = asyncio.Lock()
        # Set once a key is subscribed: the reader waits on it while nothing is (a
        # poll here would hold the first result after an idle moment for its period).
        self._subscribed = asyncio.Event()

    async def wait(self, task_id: str, timeout_s: float | None = None) -> Any:
        key = self.backend.get_key_for_task(task_id)
        if isinstance(key, bytes):
            key = key.decode()
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(key, [])
        waiters.append(future)
        try:
            try:
                if len(waiters) == 1:
                    async with self._lock:  # one connection: connect and send in turn
                        await self._subscription().subscribe(key)
                    self._subscribed.set()
                meta = _ready_meta(self.backend, await self._client.get(key))
            except aioredis.RedisError as exc:
                await self._reset(exc)
                raise StorageError(f"result backend unreachable: {exc}") from exc
            if meta is None:
                async with asyncio.timeout(timeout_s):
                    meta = await self._until_ready(key, future)
        finally:
            waiters.remove(future)
            if not waiters:
                del self._waiters[key]
                self._unsubscribe_soon(key)
        return _outcome(self.backend, meta)

    def _unsubscribe_soon(self, key: str) -> None:
        """Keys nobody waits for any more leave the subscription together, one
        ``UNSUBSCRIBE`` per ``unsubscribe_after_s`` rather than one per result."""
        self._leaving.add(key)
        if self._leaver is None:
            self._leaver = asyncio.get_running_loop().create_task(self._unsubscribe_leaving())

    async def _unsubscribe_leaving(self) -> None:
        await asyncio.sleep(self.unsubscribe_after_s)
        self._leaver = None  # keys leaving from now on go with the next one
        keys = [key for key in self._leaving if key not in self._waiters]
        self._leaving.clear()
        if keys and self._pubsub is not None:
            with contextlib.suppress(aioredis.RedisError):
                async with self._lock:
                    await self._pubsub.unsubscribe(*keys)

    async def outcome(self, task_id: str) -> Any:
        """The task's result if it has finished (its exception raised if it failed),
        else None: one read, no wait."""
        key = self.backend.get_key_for_task(task_id)
        try:
            meta = _ready_meta(self.backend, await self._client.get(key))
        except aioredis.RedisError as exc:
            raise StorageError(f"result backend unreachable: {exc}") from exc
        return None if meta is None else _outcome(self.backend, meta)

    async def _until_ready(self, key: str, future: asyncio.Future[dict[str, Any]]) -> Any:
        """The published result, or the stored one read after ``recheck_s``, then
        after twice as long each time (up to 30 s: a long wait of many callers costs
        few reads): a result stored while the subscription was on its way (or lost
        with a reconnect) is found then, not at the caller's timeout."""
        recheck_s = self.recheck_s
        while True:
            done, _ = await asyncio.wait({future}, timeout=recheck_s)
            recheck_s = min(2 * recheck_s, max(self.recheck_s, 30.0))
            if done:
                return future.result()
            try:
                meta = _ready_meta(self.backend, await self._client.get(key))
            except aioredis.RedisError as exc:
                raise StorageError(f"result backend unreachable: {exc}") from exc
            if meta is not None:
                return meta

    def _subscription(self) -> Any:
        if self._pubsub is None:
            self._pubsub = self._client.pubsub()
            self._reader = asyncio.get_running_loop().create_task(self._read(self._pubsub))
        return self._pubsub

    async def _read(self, pubsub: Any) -> None:
        while True:
            try:
                if not pubsub.subscribed:
                    self._subscribed.clear()
                    await self._subscribed.wait()
                    continue
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            except aioredis.RedisError as exc:
                await self._reset(exc)
                return
            if message is None or message.get("type") != "message":
                continue
            channel = message["channel"]
            channel = channel.decode() if isinstance(channel, bytes) else channel
            meta = _ready_meta(self.backend, message["data"])
            if meta is None:
                continue
            for future in self._waiters.get(channel, ()):
                if not future.done():
                    future.set_result(meta)

    async def _reset(self, exc: Exception) -> None:
        """The subscription broke: every wait fails (StorageError), the next one
        subscribes afresh."""
        pubsub, self._pubsub = self._pubsub, None
        reader, self._reader = self._reader, None
        self._leaving.clear()  # a new subscription starts without them
        for waiters in self._waiters.values():
            for future in waiters:
                if not future.done():
                    future.set_exception(StorageError(f"result backend unreachable: {exc}"))
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def close(self) -> None:
        if self._leaver is not None:
            self._leaver.cancel()
            self._leaver = None
        await self._reset(StorageError("listener closed"))
        await self._client.aclose()


def _url(backend: Any) -> str:
    """The result backend as the throttle's configuration names it (a Sentinel master
    too; Celery's own setting holds kombu's form of it); for an app made without one,
    the backend's own URL."""
    config = getattr(backend.app, "llm_config", None)
    if config is not None:
        return str(config.result_backend)
    return str(getattr(backend, "url", None) or backend.app.conf.result_backend)


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
    app = sending_app()  # the caller's app, in the sending thread too

    def send() -> AsyncResult:
        app.set_current()
        result = enqueue(**kwargs)
        # Celery's Redis backend subscribed its blocking result consumer to the task
        # at send (for a .get() that an awaited result never makes); leave here, on
        # this thread, not when the result is collected (on the event loop's thread).
        with contextlib.suppress(Exception):
            result.backend.result_consumer.cancel_for(result.id)
        return result

    return AwaitableResult(await asyncio.to_thread(send))

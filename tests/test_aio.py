"""``await aenqueue(...)`` (tasks/aio.py) against a real stack: many waits at once on
one event loop, with no thread per wait; a timeout; a failed task's typed error."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest
import redis
from celery import Celery

from tasks import aenqueue, enqueue
from tasks.aio import AwaitableResult, ResultListener
from testing.harness import LocalStack
from throttle.errors import InvalidRequestError

CALL = {
    "provider": "emu",
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Say hello."}],
    "max_tokens": 16,
}


@pytest.mark.integration
@pytest.mark.slow
def test_awaited_completions(stacks: list[LocalStack]) -> None:
    from test_e2e import emulator, throttle_doc

    stack = LocalStack(
        emulator({"default": ("gpt-4o-mini", "requests=100/s,tokens=1000000/s")}),
        throttle_doc(
            {"emu:mini": {"models": ["gpt-4o-mini"], "requests": "50/s", "tokens": "1000000/s"}}
        ),
    ).start()
    stacks.append(stack)
    assert stack.app is not None
    stack.app.set_current()

    async def before_any_worker() -> None:
        waiting = await aenqueue(**CALL)
        with pytest.raises(TimeoutError):
            await waiting.wait(timeout_s=0.5)
        with pytest.raises(InvalidRequestError):
            await aenqueue(**CALL, frobnicate=1)

    asyncio.run(before_any_worker())
    stack.start_workers(1, pool="threads", concurrency=8)
    threads_seen: list[int] = []

    async def forty_at_once() -> list[object]:
        completions = [await aenqueue(**CALL, tenant=f"t{n % 4}") for n in range(40)]

        async def count_threads() -> None:
            await asyncio.sleep(0.3)
            threads_seen.append(threading.active_count())

        watcher = asyncio.create_task(count_threads())
        results = await asyncio.gather(*(c.wait(timeout_s=60) for c in completions))
        await watcher
        return list(results)

    before = threading.active_count()
    results = asyncio.run(forty_at_once())
    assert len(results) == 40
    assert all(r["response"]["choices"] for r in results)  # type: ignore[index]
    assert threads_seen and threads_seen[0] <= before + 4, "the waits hold no threads"

    async def forty_on_one_listener() -> list[object]:
        """Waits sharing one subscription (the gateway's), all subscribing at once."""
        assert stack.app is not None
        listener = ResultListener(stack.app.backend)
        completions = [await aenqueue(**CALL) for _ in range(40)]
        try:
            results = await asyncio.gather(*(c.wait(60, listener) for c in completions))
        finally:
            await listener.close()
        return list(results)

    shared = asyncio.run(forty_on_one_listener())
    assert len(shared) == 40 and all(r["response"]["choices"] for r in shared)  # type: ignore[index]


def _subscribers(client: redis.Redis, channel: bytes) -> int:
    return int(dict(client.pubsub_numsub(channel)).get(channel, 0))  # type: ignore[arg-type]


def test_a_result_stored_without_its_publish_is_found_by_the_recheck(redis_url: str) -> None:
    """A result whose publish the subscription missed (stored before the SUBSCRIBE
    took effect, or during a reconnect) is read from the backend, not waited for
    until the caller's timeout."""
    backend = Celery("aio-recheck", backend=redis_url, set_as_current=False).backend

    async def wait_for_a_silent_result() -> object:
        listener = ResultListener(backend, recheck_s=0.1)
        task_id = str(uuid.uuid4())
        waiting = asyncio.create_task(listener.wait(task_id, timeout_s=20))
        await asyncio.sleep(0.3)  # subscribed; nothing stored yet
        meta = {"status": "SUCCESS", "result": {"ok": 1}, "traceback": None, "task_id": task_id}
        key = backend.get_key_for_task(task_id)
        client = redis.Redis.from_url(redis_url)
        client.set(key, backend.encode(meta))  # and no PUBLISH
        try:
            result = await waiting
            # the key leaves the subscription once nobody waits (with others, in a
            # moment: one UNSUBSCRIBE for many)
            for _ in range(100):
                if _subscribers(client, key) == 0:
                    break
                await asyncio.sleep(0.05)
            assert _subscribers(client, key) == 0
            return result
        finally:
            await listener.close()

    assert asyncio.run(wait_for_a_silent_result()) == {"ok": 1}


@pytest.mark.integration
def test_a_send_told_the_queue_is_empty_reads_it_no_more(stacks: list[LocalStack]) -> None:
    """The gateway's backpressure read has just seen the group's fair queue empty:
    ``enqueue(queue_seen_empty=True)`` sends without reading it again (one Redis
    round trip less per request)."""
    from test_e2e import emulator, throttle_doc

    stack = LocalStack(
        emulator({"default": ("gpt-4o-mini", "requests=100/s")}),
        throttle_doc({"emu:mini": {"models": ["gpt-4o-mini"], "requests": "50/s"}}),
    ).start()
    stacks.append(stack)
    assert stack.app is not None and stack.config is not None
    stack.app.set_current()
    client = redis.Redis.from_url(stack.config.redis.url)

    def queue_reads() -> int:
        stats = client.info("commandstats").get("cmdstat_hget", {})
        return int(stats.get("calls", 0)) if isinstance(stats, dict) else 0

    before = queue_reads()
    enqueue(**CALL)
    read_once = queue_reads()
    enqueue(**CALL, queue_seen_empty=True)
    assert read_once == before + 1 and queue_reads() == read_once
    assert redis.Redis.from_url(stack.config.broker_url).llen("llm") == 2


@pytest.mark.integration
def test_an_awaited_send_leaves_celerys_blocking_result_consumer(
    stacks: list[LocalStack],
) -> None:
    """Celery's Redis backend subscribes its blocking consumer to every task sent; an
    awaited one never uses it, and its unsubscribe at garbage collection would be a
    blocking Redis write on the event loop's thread."""
    from test_e2e import emulator, throttle_doc

    stack = LocalStack(
        emulator({"default": ("gpt-4o-mini", "requests=100/s")}),
        throttle_doc({"emu:mini": {"models": ["gpt-4o-mini"], "requests": "50/s"}}),
    ).start()
    stacks.append(stack)
    assert stack.app is not None
    stack.app.set_current()

    async def send() -> AwaitableResult:
        return await aenqueue(**CALL)

    completion = asyncio.run(send())  # held: not collected yet
    backend = completion.result.backend  # the sending thread's
    assert backend.get_key_for_task(completion.id) not in backend.result_consumer.subscribed_to

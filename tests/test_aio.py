"""``await aenqueue(...)`` (tasks/aio.py) against a real stack: many waits at once on
one event loop, with no thread per wait; a timeout; a failed task's typed error."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tasks import aenqueue
from tasks.aio import ResultListener
from throttle.errors import InvalidRequestError
from workers.harness import LocalStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CALL = {
    "provider": "emu",
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Say hello."}],
    "max_tokens": 16,
}


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

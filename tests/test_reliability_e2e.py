"""Redis restarted under a running stack (issue 12, acceptance 1 and 2): workers ride
it out. With an append-only file nothing is lost and every task succeeds; without
persistence the work queued in Redis is gone (README, Operating it), and tasks sent
after the restart run."""

from __future__ import annotations

import signal
import time

import pytest
from test_e2e import PROMPT, emulator, held_messages, throttle_doc, wait_all

from testing.harness import LocalStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

THREADS = 8


def running_stack(stacks: list[LocalStack], appendonly: bool) -> LocalStack:
    stack = LocalStack(
        emulator({"default": ("gpt-4o-mini", "requests=100/s,tokens=1000000/s")}, ttft_ms=100),
        throttle_doc(
            {"emu:mini": {"models": ["gpt-4o-mini"], "requests": "20/s", "tokens": "1000000/s"}},
            celery={"visibility_timeout_s": 8},
            worker={"release_stale_s": 3.0},
        ),
        redis_appendonly=appendonly,
    ).start()
    stacks.append(stack)
    stack.start_workers(2, pool="threads", concurrency=THREADS)
    return stack


def enqueue(stack: LocalStack, count: int) -> list[object]:
    return [
        stack.enqueue(provider="emu", model="gpt-4o-mini", messages=PROMPT, max_tokens=16)
        for _ in range(count)
    ]


def restart_redis(stack: LocalStack, sig: int) -> int:
    """End Redis with ``sig`` mid-run and start it again on its port 5 s later; returns
    the calls in flight just before."""
    time.sleep(3)
    in_flight = sum(held_messages(stack).values())
    stack.redis.crash(sig)
    time.sleep(5)
    stack.redis.start()
    return in_flight


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_with_an_append_only_file_a_redis_restart_loses_nothing(
    stacks: list[LocalStack], sig: int
) -> None:
    stack = running_stack(stacks, appendonly=True)
    before = enqueue(stack, 200)
    in_flight = restart_redis(stack, sig)
    after = enqueue(stack, 20)
    wait_all(before + after, timeout_s=120, stack=stack)
    assert all(r.successful() for r in before + after)  # type: ignore[attr-defined]
    dead = [i for i, worker in enumerate(stack.workers) if worker.poll() is not None]
    assert not dead, [stack.worker_log(i)[-3000:] for i in dead]  # both workers alive
    admitted = stack.emulator_stats()["admitted"]
    # only calls in flight at the crash may reach the provider twice
    assert 220 <= admitted <= 220 + max(in_flight, 2 * THREADS), (admitted, in_flight)


def test_without_persistence_workers_ride_out_a_redis_restart(stacks: list[LocalStack]) -> None:
    stack = running_stack(stacks, appendonly=False)
    enqueue(stack, 200)  # lost with the server's memory: queued work and results
    restart_redis(stack, signal.SIGKILL)
    after = enqueue(stack, 20)
    wait_all(after, timeout_s=90, stack=stack)
    assert all(r.successful() for r in after)  # type: ignore[attr-defined]
    assert all(worker.poll() is None for worker in stack.workers), "both workers alive"

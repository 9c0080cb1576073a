"""Garbage task messages (issue 12, acceptance 5): 200 messages sent by name, not
through ``enqueue``, with random arguments. A real worker fails each with a typed
error (a ThrottleError subclass) in its result, and its log holds no untyped
exception."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

from testing.harness import LocalStack
from throttle.errors import ThrottleError
from workers.publish import COMPLETE_TASK
from workers.validate import PARAMETERS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GOOD: dict[str, Any] = {
    "provider": "emu",
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "hi"}],
    "max_tokens": 8,
}


def junk(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["int", "float", "str", "none", "bool", "list", "dict"]
    kind = rng.choice(kinds if depth < 2 else kinds[:5])
    if kind == "int":
        return rng.choice([0, -1, 1, 7, 10**12, -(10**9)])
    if kind == "float":
        return rng.choice([0.5, -3.2, 1e300, 1e-9])
    if kind == "str":
        return rng.choice(["", "x", "user", "gpt-4o-mini", "emu", "\u00e9\u0000", "9" * 50])
    if kind == "none":
        return None
    if kind == "bool":
        return rng.choice([True, False])
    if kind == "list":
        return [junk(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(["role", "content", "a", "deadline_at_s", "costs"]): junk(rng, depth + 1)
            for _ in range(rng.randint(0, 3))}  # fmt: skip


def garbage(rng: random.Random) -> tuple[list[Any], dict[str, Any]]:
    """One message's args and kwargs: a good call with some parts broken."""
    kwargs = dict(GOOD)
    names = [name for name, _ in PARAMETERS]
    for _ in range(rng.randint(1, 4)):
        action = rng.random()
        if action < 0.4:
            kwargs[rng.choice(names)] = junk(rng)
        elif action < 0.55:
            kwargs.pop(rng.choice(names), None)
        elif action < 0.7:
            kwargs[rng.choice(["temperature", "stream", "x", "throttle"])] = junk(rng)
        elif action < 0.85:
            kwargs["messages"] = [junk(rng) for _ in range(rng.randint(0, 3))]
        else:
            kwargs["throttle_state"] = junk(rng)
    args: list[Any] = []
    if rng.random() < 0.15:
        args = [junk(rng) for _ in range(rng.randint(1, 12))]
    return args, kwargs


def test_garbage_messages_fail_with_typed_errors(stacks: list[LocalStack]) -> None:
    from test_e2e import emulator, throttle_doc

    stack = LocalStack(
        emulator({"default": ("gpt-4o-mini", "requests=1000/s,tokens=10000000/s")}),
        throttle_doc(
            {"emu:mini": {"models": ["gpt-4o-mini"], "requests": "500/s", "tokens": "5M/s"}}
        ),
    ).start()
    stacks.append(stack)
    stack.start_workers(1, pool="threads", concurrency=8)
    assert stack.app is not None
    rng = random.Random(20261204)
    sent = []
    for _ in range(200):
        args, kwargs = garbage(rng)
        sent.append((args, kwargs, stack.app.send_task(COMPLETE_TASK, args=args, kwargs=kwargs)))
    deadline = time.monotonic() + 120
    while not all(r.ready() for _, _, r in sent):
        assert time.monotonic() < deadline, f"{sum(not r.ready() for _, _, r in sent)} unfinished"
        time.sleep(0.2)
    untyped = [
        (args, kwargs, repr(r.result))
        for args, kwargs, r in sent
        if r.failed() and not isinstance(r.result, ThrottleError)
    ]
    assert untyped == []
    assert sum(r.failed() for _, _, r in sent) >= 150, "most of them are broken"
    log = stack.worker_log(0)
    for name in ("TypeError", "AttributeError", "KeyError", "ValueError", "IndexError"):
        assert name not in log, log[-3000:]

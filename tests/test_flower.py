"""Flower shows the throttle per task: a real worker and a real Flower, read through
Flower's HTTP API and its task page.

Flower displays only Celery's own task fields, so the facts travel in them (see
workers/task.py): while a task is parked, state ``PARKED`` with its facts as result; once
done, the facts at the head of its result; after a Celery retry, the error as exception.
"""

from __future__ import annotations

import ast
import html
import re
import time
from typing import Any

import pytest
import requests

from testing.emulator import (
    EmulatorConfig,
    LatencyConfig,
    PoolConfig,
    parse_limits_text,
)
from testing.harness import LocalStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROMPT = [{"role": "user", "content": "Name three rivers."}]
GENEROUS = "requests=20/s,tokens=1000000/s"


def throttle_facts(shown: str | None) -> dict[str, Any]:
    """The facts in a result as Flower shows it (a repr): a parked task's whole result,
    or a completed task's leading ``'throttle': {...}``."""
    assert shown, "Flower shows no result"
    nested = re.search(r"'throttle': (\{[^{}]*\})", shown)
    facts = ast.literal_eval(nested.group(1) if nested else shown)
    assert isinstance(facts, dict), shown
    return facts


def flower_task(flower: str, task_id: str) -> dict[str, Any]:
    reply = requests.get(f"{flower}/api/task/info/{task_id}", timeout=5)
    reply.raise_for_status()
    return reply.json()  # type: ignore[no-any-return]


def test_flower_shows_waits_parks_429s_and_retries(stacks: list[LocalStack]) -> None:
    emu = EmulatorConfig(
        pools=(
            PoolConfig("default", parse_limits_text(GENEROUS), models=("gpt-4o-mini",)),
            PoolConfig("flaky", parse_limits_text(GENEROUS), models=("gpt-4o",)),
        ),
        latency=LatencyConfig(ttft_ms=20),
    )
    group = {"provider": "emu", "tokens": "1000000/s"}
    doc = {
        "providers": {"emu": {"profile": "openai", "base_url": "emulator"}},
        "groups": {
            # One request a second: five tasks reach past the 2 s hold horizon.
            "emu:mini": {**group, "models": ["gpt-4o-mini"], "requests": "1/s", "headroom": 0.0},
            "emu:big": {**group, "models": ["gpt-4o"], "requests": "20/s"},
        },
    }
    stack = LocalStack(emu, doc).start()
    stacks.append(stack)
    stack.start_workers(1, pool="threads", concurrency=4)
    flower = stack.start_flower()
    now_s = stack.emulator_stats()["now_s"]
    faults = [
        # The first mini request is refused: the group pauses 3 s and that task is parked.
        {"kind": "rate_limit", "pool": "default", "start_s": now_s, "max_hits": 1,
         "retry_after_s": 3},
        # The big request's connection drops until the client gives up: a Celery retry.
        {"kind": "drop_connection", "pool": "flaky", "start_s": now_s, "max_hits": 3},
    ]  # fmt: skip
    stack.emulator_post("/__emu/faults", {"faults": faults})
    mini = [
        stack.enqueue(provider="emu", model="gpt-4o-mini", messages=PROMPT, max_tokens=20)
        for _ in range(5)
    ]
    big = stack.enqueue(provider="emu", model="gpt-4o", messages=PROMPT, max_tokens=20)
    everything = [*mini, big]

    # While they run: a parked task is PARKED in Flower, with its facts as result.
    seen_parked: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 45
    while not all(r.ready() for r in everything):
        assert time.monotonic() < deadline, "tasks unfinished"
        for task_id, task in requests.get(f"{flower}/api/tasks", timeout=5).json().items():
            if task["state"] == "PARKED" and task_id not in seen_parked:
                seen_parked[task_id] = throttle_facts(task["result"])
        time.sleep(0.2)
    assert all(r.successful() for r in everything), [r.result for r in everything]

    # Done: Flower has every task's final state; its results hold the backend's facts.
    shown: dict[str, dict[str, Any]] = {}
    while len(shown) < len(everything):
        assert time.monotonic() < deadline, "Flower did not see every task finish"
        for r in everything:
            info = flower_task(flower, r.id)
            if info["state"] == "SUCCESS":
                shown[r.id] = info
        time.sleep(0.2)
    facts = {r.id: throttle_facts(shown[r.id]["result"]) for r in everything}
    for r in everything:
        assert facts[r.id] == r.result["throttle"]

    # Parks: seen live, each with its wait ahead; the 429 is in the facts of one of them.
    assert len(seen_parked) >= 2, seen_parked
    for task_id, live in seen_parked.items():
        assert live["group"] == "emu:mini"
        assert live["parks"] >= 1 and live["slot_in_s"] > 0, live
        assert facts[task_id]["parks"] >= live["parks"]
    assert [f["rate_limited"] for f in seen_parked.values()].count(1) == 1, seen_parked

    # The 429: one task, which waited out the 3 s pause (parked) and called twice.
    refused = [r.id for r in mini if facts[r.id]["rate_limited"] > 0]
    assert len(refused) == 1, facts
    hit = facts[refused[0]]
    assert hit["rate_limited"] == 1 and hit["attempts"] == 2 and hit["parks"] >= 1
    assert hit["waited_s"] >= 2.5
    page = html.unescape(requests.get(f"{flower}/task/{refused[0]}", timeout=5).text)
    assert "'rate_limited': 1" in page and "'waited_s': " in page

    # Waits: every mini task waited, for its slot or out of the pause.
    assert all(facts[r.id]["waited_s"] > 0 for r in mini), facts

    # The retry: Flower counts it and names the error; the result says the same.
    retried = shown[big.id]
    assert retried["retried"] is not None and retried["retries"] >= 1
    assert "TransportError" in (retried["exception"] or ""), retried["exception"]
    assert facts[big.id]["celery_retries"] == retried["retries"]
    assert stack.emulator_stats()["refused"].get("fault:rate_limit", 0) == 1

"""End to end: real redis-server, the provider emulator in its own process, real Celery
worker processes, real HTTP. Limits are compressed to seconds so each run is short.

Utilization is read from the emulator's own counters: cost it admitted between two
moments in the steady part of a run, over what its limit allows in that time.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping
from typing import Any

import pytest
import redis

from testing.emulator import (
    EmulatorConfig,
    LatencyConfig,
    PoolConfig,
    parse_limits_text,
)
from testing.harness import COMPRESSED_HEADROOM, LocalStack
from testing.redis_server import EmbeddedRedis, free_port
from throttle.errors import (
    CostExceedsCapacityError,
    InvalidRequestError,
    StorageError,
    UnknownGroupError,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROMPT = [{"role": "user", "content": "Summarise the plot of a short story. " * 3}]


def emulator(pools: Mapping[str, tuple[str, str]], ttft_ms: float = 20) -> EmulatorConfig:
    """pools: name -> (model pattern, limits text)."""
    return EmulatorConfig(
        pools=tuple(
            PoolConfig(name, parse_limits_text(limits), models=(model,))
            for name, (model, limits) in pools.items()
        ),
        latency=LatencyConfig(ttft_ms=ttft_ms),
    )


def throttle_doc(groups: Mapping[str, Mapping[str, Any]], **sections: Any) -> dict[str, Any]:
    """Groups get COMPRESSED_HEADROOM: with limits per second instead of per minute, a
    bucket's margin at the provider is a few requests, not dozens."""
    doc: dict[str, Any] = {
        "providers": {"emu": {"profile": "openai", "base_url": "emulator"}},
        "groups": {
            name: {"provider": "emu", "headroom": COMPRESSED_HEADROOM, **spec}
            for name, spec in groups.items()
        },
    }
    doc.update(sections)
    return doc


def start(stacks: list[LocalStack], emu: EmulatorConfig, doc: dict[str, Any]) -> LocalStack:
    stack = LocalStack(emu, doc).start()
    stacks.append(stack)
    return stack


def narrow_group_stack(stacks: list[LocalStack], requests: str) -> LocalStack:
    """A stack whose group ``emu:mini`` allows ``requests`` (the emulator allows far
    more): work beyond that waits in the fair queue."""
    return start(
        stacks,
        emulator({"default": ("gpt-4o-mini", "requests=100/s,tokens=1000000/s")}),
        throttle_doc(
            {"emu:mini": {"models": ["gpt-4o-mini"], "requests": requests, "tokens": "1000000/s"}}
        ),
    )


def strict_stack(stacks: list[LocalStack], rate: str = "20/s") -> LocalStack:
    """A stack whose group ``emu:mini`` has exactly the emulator's request limit."""
    return start(
        stacks,
        emulator({"default": ("gpt-4o-mini", f"requests={rate},tokens=1000000/s")}),
        throttle_doc(
            {"emu:mini": {"models": ["gpt-4o-mini"], "requests": rate, "tokens": "1000000/s"}}
        ),
    )


def inject_429s(stack: LocalStack, in_s: float, duration_s: float, retry_after_s: float) -> None:
    """The emulator answers every request with a 429 from ``in_s`` for ``duration_s``."""
    storm = {"kind": "rate_limit", "start_s": stack.emulator_stats()["now_s"] + in_s,
             "duration_s": duration_s, "retry_after_s": retry_after_s}  # fmt: skip
    stack.emulator_post("/__emu/faults", {"faults": [storm]})


#: The kwargs of one small completion in ``emu:mini``.
CALL: dict[str, Any] = {
    "provider": "emu",
    "model": "gpt-4o-mini",
    "messages": PROMPT,
    "max_tokens": 16,
}


def enqueue_many(stack: LocalStack, count: int, model: str, max_tokens: int = 50) -> list[Any]:
    return [
        stack.enqueue(provider="emu", model=model, messages=PROMPT, max_tokens=max_tokens)
        for _ in range(count)
    ]


def wait_all(results: list[Any], timeout_s: float, stack: LocalStack | None = None) -> None:
    """Wait until every result is ready; on timeout, fail naming how many are not (and,
    given the stack, where each of them is: see ``whereabouts``)."""
    deadline = time.monotonic() + timeout_s
    while not all(r.ready() for r in results):
        if time.monotonic() >= deadline:
            unfinished = [r for r in results if not r.ready()]
            where = f": {whereabouts(stack, unfinished)}" if stack is not None else ""
            raise AssertionError(f"{len(unfinished)} unfinished{where}")
        time.sleep(0.2)


def whereabouts(stack: LocalStack, results: list[Any]) -> dict[str, list[str]]:
    """For each task: its state and every Redis key (broker or limiter database) whose
    value mentions its id (a queue, kombu's unacked hash, a fair-queue flow, ...)."""
    assert stack.config is not None
    found: dict[str, list[str]] = {}
    for result in results:
        found[result.id] = [f"state={result.state}"]
    base = stack.redis.url.rsplit("/", 1)[0]  # the stack's own server (broker, results)
    for db in range(16):
        client = redis.Redis.from_url(f"{base}/{db}")
        for key in client.scan_iter(count=1000):
            kind = client.type(key).decode()
            if kind == "list":
                text = repr(client.lrange(key, 0, -1))
            elif kind == "hash":
                text = repr(client.hgetall(key))
            elif kind == "zset":
                text = repr(client.zrange(key, 0, -1))
            elif kind == "string":
                text = repr(client.get(key))
            else:
                continue
            for task_id, places in found.items():
                if task_id in text or task_id in key.decode(errors="replace"):
                    places.append(f"db{db}:{key.decode(errors='replace')}({kind})")
    return found


def admitted(stats: Mapping[str, Any], pool: str, dimension: str) -> float:
    return float(stats["pools"][f"org-emulator/{pool}"][dimension]["admitted_cost"])


def utilization_between(
    stack: LocalStack, pool: str, dimension: str, rate_per_s: float, from_s: float, to_s: float
) -> float:
    """Cost admitted from ``from_s`` to ``to_s`` (seconds from now) over the limit."""
    time.sleep(from_s)
    first, t_first = stack.emulator_stats(), time.monotonic()
    time.sleep(to_s - from_s)
    last, t_last = stack.emulator_stats(), time.monotonic()
    cost = admitted(last, pool, dimension) - admitted(first, pool, dimension)
    return cost / (rate_per_s * (t_last - t_first))


def no_429s(stats: Mapping[str, Any]) -> bool:
    return "429" not in stats["by_status"]


# -- 1. utilization with zero provider 429s ------------------------------------------


@pytest.mark.parametrize(
    ("limits", "binding", "rate_per_s", "count"),
    [
        ("requests=30/s,tokens=1000000/s", "requests", 30.0, 420),
        ("requests=1000/s,tokens=4000/s", "tokens", 4000.0, 650),
    ],
    ids=["requests-bind", "tokens-bind"],
)
def test_two_workers_use_the_binding_limit_without_429s(
    stacks: list[LocalStack], limits: str, binding: str, rate_per_s: float, count: int
) -> None:
    requests_limit, tokens_limit = (part.split("=")[1] for part in limits.split(","))
    stack = start(
        stacks,
        emulator({"default": ("gpt-4o-mini", limits)}),
        throttle_doc(
            {
                "emu:mini": {
                    "models": ["gpt-4o-mini"],
                    "requests": requests_limit,
                    "tokens": tokens_limit,
                }
            }
        ),
    )
    results = enqueue_many(stack, count, "gpt-4o-mini", max_tokens=60)
    stack.start_workers(2, pool="threads", concurrency=16)
    utilization = utilization_between(stack, "default", binding, rate_per_s, 3.0, 10.0)
    wait_all(results, timeout_s=90)
    stats = stack.emulator_stats()
    assert all(r.successful() for r in results)
    assert no_429s(stats), stats["by_status"]
    assert utilization >= 0.90, f"{binding} utilization {utilization:.3f}"


def test_azure_rolling_windows_are_filled_whole_without_429s(stacks: list[LocalStack]) -> None:
    """Azure returns each request's tokens one window after it and counts requests in a
    log of a sixth of the window. Declared as sliding windows (as the README says, with
    the compressed windows' headroom), the token log is used whole, never overfilled,
    and every task finishes."""
    from testing.emulator import Profile

    emu = EmulatorConfig(
        profile=Profile.AZURE,
        pools=(PoolConfig("default", parse_limits_text("requests=120/3s,tokens=15000/3s")),),
        latency=LatencyConfig(ttft_ms=20),
    )
    doc = {
        "providers": {"az": {"profile": "azure", "base_url": "emulator"}},
        "groups": {
            "az:gpt-4o": {
                "provider": "az",
                "models": ["gpt-4o"],
                "headroom": COMPRESSED_HEADROOM,
                "tokens": {"limit": "15000/3s", "algorithm": "sliding"},
                "requests": {"limit": "20/0.5s", "algorithm": "sliding"},
            }
        },
    }
    stack = start(stacks, emu, doc)
    results = [
        stack.enqueue(provider="az", model="gpt-4o", messages=PROMPT, max_tokens=200)
        for _ in range(200)  # about 215 tokens each: three windows of tokens
    ]
    stack.start_workers(1, pool="threads", concurrency=8)
    wait_all(results, timeout_s=90, stack=stack)
    stats = stack.emulator_stats()
    assert all(r.successful() for r in results)
    assert no_429s(stats), (stats["by_status"], stats["refused"])
    tokens = stats["pools"]["org-emulator/default"]["tokens"]
    # the first window took a whole log's worth at once: all 15,000, not 75% of it
    assert 14_000 <= tokens["peak_window_cost"] <= 15_000, tokens


def test_two_credentials_each_run_at_their_own_limit(stacks: list[LocalStack]) -> None:
    """A group listing two credentials: each key has its own quota at the provider and
    its own buckets here; tasks that name none are spread by the group, and both keys
    are used to their limits without a 429."""
    emu = EmulatorConfig(
        pools=(PoolConfig("default", parse_limits_text("requests=20/s,tokens=1000000/s")),),
        keys={"sk-a": "org-a", "sk-b": "org-b"},
        latency=LatencyConfig(ttft_ms=20),
    )
    doc = throttle_doc(
        {
            "emu:mini": {
                "models": ["gpt-4o-mini"],
                "requests": "20/s",
                "tokens": "1000000/s",
                "credentials": ["key-a", "key-b"],
            }
        }
    )
    stack = start(stacks, emu, doc)
    keys = {"LLM_THROTTLE_KEY_KEY_A": "sk-a", "LLM_THROTTLE_KEY_KEY_B": "sk-b"}
    stack.start_workers(2, pool="threads", concurrency=16, extra_env=keys)
    results = enqueue_many(stack, 1000, "gpt-4o-mini", max_tokens=16)  # 25 s of work
    named = stack.enqueue(provider="emu", model="gpt-4o-mini", messages=PROMPT, max_tokens=8,
                          credential="key-b")  # fmt: skip
    with pytest.raises(InvalidRequestError, match="key-c"):
        stack.enqueue(provider="emu", model="gpt-4o-mini", messages=PROMPT, max_tokens=8,
                      credential="key-c")  # fmt: skip

    def used(stats: Mapping[str, Any], org: str) -> float:
        return float(stats["pools"][f"{org}/default"]["requests"]["admitted_cost"])

    time.sleep(3.0)
    first, t_first = stack.emulator_stats(), time.monotonic()
    time.sleep(7.0)
    last, t_last = stack.emulator_stats(), time.monotonic()
    rates = [
        (used(last, org) - used(first, org)) / (t_last - t_first) for org in ("org-a", "org-b")
    ]
    assert used(last, "org-a") + used(last, "org-b") < 900, "measured while work was left"
    wait_all([*results, named], timeout_s=120, stack=stack)
    stats = stack.emulator_stats()
    assert all(r.successful() for r in [*results, named])
    assert no_429s(stats), (stats["by_status"], stats["refused"])
    assert all(rate >= 0.9 * 20 for rate in rates), rates
    assert used(stats, "org-a") + used(stats, "org-b") == 1001


# -- 2. no head-of-line blocking -------------------------------------------------------


def test_a_paused_group_does_not_hold_up_another(stacks: list[LocalStack]) -> None:
    stack = start(
        stacks,
        emulator(
            {
                "a": ("model-a", "requests=20/s,tokens=1000000/s"),
                "b": ("model-b", "requests=20/s,tokens=1000000/s"),
            }
        ),
        throttle_doc(
            {
                "emu:a": {"models": ["model-a"], "requests": "20/s", "tokens": "1000000/s"},
                "emu:b": {"models": ["model-b"], "requests": "20/s", "tokens": "1000000/s"},
            }
        ),
    )
    results = []
    for _ in range(300):
        results += enqueue_many(stack, 1, "model-a") + enqueue_many(stack, 1, "model-b")
    stack.start_workers(2, pool="threads", concurrency=16)
    now_s = stack.emulator_stats()["now_s"]
    fault = {"kind": "rate_limit", "pool": "a", "start_s": now_s + 1.0, "duration_s": 0.5,
             "retry_after_s": 10}  # fmt: skip
    stack.emulator_post("/__emu/faults", {"faults": [fault]})
    # A is refused at ~1 s and pauses for 10 s; measure B well inside that pause.
    b_share = utilization_between(stack, "b", "requests", 20.0, 2.5, 9.5)
    a_during = stack.emulator_stats()
    wait_all(results, timeout_s=120)
    assert b_share >= 0.90, f"group B got {b_share:.2f} of its limit while A was paused"
    assert a_during["refused"].get("fault:rate_limit", 0) >= 1
    assert all(r.successful() for r in results)
    assert stack.emulator_stats()["early_retries"] == 0


# -- 3. a long backlog is parked in Redis, not in worker memory ------------------------


def held_messages(stack: LocalStack) -> dict[str, int]:
    assert stack.app is not None
    inspect = stack.app.control.inspect(timeout=1.0)
    counts: dict[str, int] = {}
    for kind in (inspect.active(), inspect.reserved(), inspect.scheduled()):
        for worker, tasks in (kind or {}).items():
            counts[worker] = counts.get(worker, 0) + len(tasks)
    return counts


def survives_a_failover(
    stack: LocalStack, fail_over: Callable[[], tuple[str, str]], threads: int
) -> None:
    """200 completions on two workers (``threads`` each); ``fail_over`` (old and new
    master) runs 3 s in. Every task succeeds, both workers live, and the provider sees
    no more extra calls than were in flight."""
    stack.start_workers(2, pool="threads", concurrency=threads)
    results = [
        stack.enqueue(provider="emu", model="gpt-4o-mini", messages=PROMPT, max_tokens=16)
        for _ in range(200)
    ]
    time.sleep(3)
    in_flight = sum(held_messages(stack).values())
    old, new = fail_over()
    assert old != new
    wait_all(results, timeout_s=120, stack=stack)
    failed = [repr(r.result) for r in results if not r.successful()]
    assert not failed, (len(failed), failed[:3])
    dead = [i for i, worker in enumerate(stack.workers) if worker.poll() is not None]
    assert not dead, [stack.worker_log(i)[-3000:] for i in dead]  # both workers alive
    admitted = stack.emulator_stats()["admitted"]
    assert 200 <= admitted <= 200 + max(in_flight, 2 * threads), (admitted, in_flight)


def fair_queued(stack: LocalStack, group: str = "emu:mini") -> int:
    """Items waiting in a group's fair queue (throttle/scheduler.py)."""
    from throttle.keys import KeyBuilder

    assert stack.config is not None
    client = redis.Redis.from_url(stack.config.redis.url)
    return int(client.hget(KeyBuilder().scheduler(group), "n") or 0)


def test_backlog_of_5000_is_parked_and_released_in_slot_order(stacks: list[LocalStack]) -> None:
    concurrency = 8
    stack = start(
        stacks,
        emulator({"default": ("gpt-4o-mini", "requests=40/s,tokens=1000000/s")}, ttft_ms=5),
        throttle_doc(
            {"emu:mini": {"models": ["gpt-4o-mini"], "requests": "40/s", "tokens": "1000000/s"}}
        ),
    )
    results = enqueue_many(stack, 5000, "gpt-4o-mini", max_tokens=16)
    stack.start_workers(2, pool="threads", concurrency=concurrency)
    peak_held, peak_queued = 0, 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        held = held_messages(stack)
        peak_held = max([peak_held, *held.values()])
        peak_queued = max(peak_queued, fair_queued(stack))
    # prefetch multiplier 1: at most one message per pool thread waiting, plus the running
    assert peak_held <= concurrency + concurrency, f"a worker held {peak_held} messages"
    # The rest waits in Redis: in the group's fair queue, or still in the broker's list.
    assert peak_queued >= 1, "far slots should wait in the fair queue"
    assert stack.config is not None
    waiting = redis.Redis.from_url(stack.config.broker_url).llen(stack.config.celery.queue)
    assert waiting + fair_queued(stack) > 1000, "the backlog is in Redis, not in workers"
    done = [r.result for r in results if r.successful()]
    released = [d["throttle"] for d in done if d["throttle"]["parks"] > 0]
    assert len(released) > 50
    by_slot = sorted(released, key=lambda t: t["slot_ms"])
    starts = [t["started_ms"] for t in by_slot]
    # Slots are 25 ms apart; two worker processes of 8 threads on 2 shared cores may
    # swap neighbours by a few scheduling delays, never run the backlog out of order.
    early = [a - b for a, b in itertools.pairwise(starts) if a - b > 250]
    assert len(early) <= len(starts) // 100, f"{len(early)} of {len(starts)} started early"
    assert max(early, default=0) < 1000, f"a task started {max(early):.0f} ms before its turn"
    stats = stack.emulator_stats()
    assert no_429s(stats), stats["by_status"]
    assert stack.app is not None
    stack.app.control.purge()


def test_queued_tasks_keep_their_celery_options(stacks: list[LocalStack]) -> None:
    """A task that waited in the fair queue is published again with what its caller
    gave: its ``link`` callback runs, and a chain of two throttled completions completes
    in order."""
    import uuid

    from tasks.completion import complete

    stack = narrow_group_stack(stacks, "4/s")
    stack.start_workers(1, pool="threads", concurrency=4)
    backlog = enqueue_many(stack, 12, "gpt-4o-mini", max_tokens=16)
    kw = dict(CALL)
    callback = complete.si(**kw).set(task_id=f"callback-{uuid.uuid4().hex}")
    parent = stack.enqueue(**kw, link=callback)
    chained = (complete.si(**kw) | complete.si(**kw)).apply_async()
    wait_all([*backlog, parent], timeout_s=90)
    assert parent.successful()
    assert parent.result["throttle"]["parks"] >= 1, "it waited in the queue"
    assert stack.app is not None
    linked = stack.app.AsyncResult(callback.id)
    second = chained.get(timeout=90)
    first = chained.parent
    assert first is not None and first.successful()
    assert second["throttle"]["started_ms"] > first.result["throttle"]["started_ms"]
    wait_all([linked], timeout_s=60)
    assert linked.successful(), "the link callback of a queued task runs"


def test_a_send_into_a_backlogged_group_joins_the_queue_without_the_broker(
    stacks: list[LocalStack],
) -> None:
    """While a group has work queued, a new send is pushed into the fair queue by the
    producer itself: it shows PARKED before any worker saw it, runs once, and one sent
    with an ``expires`` that passes while it waits is revoked, never called."""
    stack = narrow_group_stack(stacks, "4/s")
    stack.start_workers(1, pool="threads", concurrency=4)
    backlog = enqueue_many(stack, 30, "gpt-4o-mini", max_tokens=16)
    deadline = time.monotonic() + 30
    while fair_queued(stack) == 0:
        assert time.monotonic() < deadline, "the backlog never queued"
        time.sleep(0.05)
    later = enqueue_many(stack, 5, "gpt-4o-mini", max_tokens=16)
    expiring = stack.enqueue(
        provider="emu", model="gpt-4o-mini", messages=PROMPT, max_tokens=16, expires=1.0
    )
    assert [r.state for r in [*later, expiring]] == ["PARKED"] * 6, "queued at send"
    wait_all([*backlog, *later, expiring], timeout_s=120)
    assert all(r.successful() for r in [*backlog, *later])
    assert all(r.result["throttle"]["celery_retries"] == 0 for r in later)
    assert expiring.state == "REVOKED", "its expiry passed while it waited"
    assert stack.emulator_stats()["admitted"] == 35


@pytest.mark.parametrize("publish_in_redis", [True, False], ids=["in-redis", "dispatcher"])
def test_a_task_queued_at_send_is_released_with_every_option(
    stacks: list[LocalStack], publish_in_redis: bool
) -> None:
    """No workers: the queue is filled through the scheduler, a task sent then is queued
    by its producer, and the message a pass releases carries its custom headers, an
    absolute expiry, its link callback and its reservation; a worker started then runs
    it. In Redis (the default, the broker being the limiter's server) the pass pushes
    the message itself, with the release written into its header; otherwise the
    dispatcher publishes it with a claim."""
    import base64
    import json
    from datetime import UTC, datetime

    from kombu.utils import json as kombu_json

    from tasks.completion import complete
    from throttle.scheduler import QueuedItem
    from workers.context import worker_context
    from workers.message import RELEASE_HEADER, parse_release
    from workers.publish import publish_released, republisher

    stack = start(
        stacks,
        emulator({"default": ("gpt-4o-mini", "requests=100/s,tokens=1000000/s")}),
        throttle_doc(
            {"emu:mini": {"models": ["gpt-4o-mini"], "requests": "2/s", "tokens": "1000000/s"}},
            scheduler={"publish_in_redis": publish_in_redis},
        ),
    )
    assert stack.app is not None and stack.config is not None
    stack.app.set_current()
    context = worker_context(stack.app)
    assert context.scheduler.publishes is publish_in_redis
    group = stack.config.limit_group(stack.config.groups["emu:mini"])
    kw = dict(CALL)
    filler = {"task": complete.name, "task_id": "filler", "kwargs": kw, "state": {
        "deadline_at_s": time.time() + 300}, "options": {}}  # fmt: skip
    for n in range(3):  # a cold bucket of 2 holds at most 2: the group has a queue
        item = QueuedItem(f"filler.{n}", {"requests": 1.0}, "interactive", None, 1.0, 0,
                          kombu_json.dumps(filler))  # fmt: skip
        context.scheduler.push(group, item)
    assert context.limiter.queued_work(group.name) >= 1
    callback = complete.si(**kw).set(task_id="the-callback")
    sent = complete.apply_async(
        kwargs=kw, headers={"x-trace": "t-1"}, expires=300, link=callback, task_id="the-task"
    )
    assert sent.state == "PARKED", "queued by its producer"
    broker = redis.Redis.from_url(stack.config.broker_url)
    released_queue = f"{stack.config.celery.queue}.released"
    deadline = time.monotonic() + 10
    ours = None
    while ours is None:
        assert time.monotonic() < deadline, "the pass did not release it"
        publish_released(republisher(stack.app), group.name, context.scheduler.run_pass(group))
        messages = [json.loads(m) for m in broker.lrange(released_queue, 0, -1)]
        ours = next((m for m in messages if m["headers"]["id"] == "the-task"), None)
        time.sleep(0.1)
    assert ours["headers"]["x-trace"] == "t-1"
    expires = datetime.fromisoformat(ours["headers"]["expires"])
    assert 250 < (expires - datetime.now(UTC)).total_seconds() <= 300, "absolute, from the send"
    _args, kwargs, embed = json.loads(base64.b64decode(ours["body"]))
    assert [c["options"]["task_id"] for c in embed["callbacks"]] == ["the-callback"]
    state = kwargs["throttle_state"]
    if publish_in_redis:
        release = parse_release(group.name, ours["headers"][RELEASE_HEADER])
        assert release is not None and release.entry_id == state["awaiting_release"]
        assert release.reason == "ok" and release.record, "released with its reservation"
        assert "release" not in state or state["release"] is None, "nothing to claim"
        releasing = context.limiter.keys.releasing(group.name)
        assert context.client.zscore(releasing, release.entry_id) is None, "not to claim"
    else:
        assert state["release"]["entry"] == "the-task.1"
        assert state["reservation"], "released with its reservation"
    stack.start_workers(1, pool="threads", concurrency=2)
    wait_all([sent, stack.app.AsyncResult("the-callback")], timeout_s=60)
    assert sent.successful() and stack.app.AsyncResult("the-callback").successful()
    assert sent.result["throttle"]["slot_ms"], "it ran on the pass's reservation"


# -- 4. a worker killed mid-run loses nothing -----------------------------------------


def test_sigkill_of_a_worker_loses_no_task(stacks: list[LocalStack]) -> None:
    stack = start(
        stacks,
        emulator({"default": ("gpt-4o-mini", "requests=20/s,tokens=1000000/s")}, ttft_ms=300),
        throttle_doc(
            {"emu:mini": {"models": ["gpt-4o-mini"], "requests": "20/s", "tokens": "1000000/s"}},
            celery={"visibility_timeout_s": 8},
        ),
    )
    stack.start_workers(2, pool="threads", concurrency=8)
    results = enqueue_many(stack, 200, "gpt-4o-mini")
    time.sleep(3.0)
    in_flight = held_messages(stack).get("w1@llm-throttle", 0)
    stack.kill_worker(1)
    wait_all(results, timeout_s=120)
    assert all(r.state == "SUCCESS" for r in results)
    assert stack.config is not None
    backend = redis.Redis.from_url(stack.config.result_backend)
    assert len(backend.keys("celery-task-meta-*")) == 200
    admitted_calls = stack.emulator_stats()["admitted"]
    assert 200 <= admitted_calls <= 200 + max(in_flight, 8)


def test_a_release_no_worker_claimed_goes_out_again_and_runs_once(
    stacks: list[LocalStack],
) -> None:
    """Releases whose messages never reached a worker (taken by a dispatcher that died,
    or popped by a worker killed before it recorded the message) are released again
    after ``release_stale_s``, and each task still runs exactly once."""
    from throttle.keys import KeyBuilder
    from throttle.limiter import RedisLimiter
    from throttle.scheduler import FairScheduler

    stack = start(
        stacks,
        emulator({"default": ("gpt-4o-mini", "requests=100/s,tokens=1000000/s")}),
        throttle_doc(
            {"emu:mini": {"models": ["gpt-4o-mini"], "requests": "5/s", "tokens": "1000000/s"}},
            worker={"release_stale_s": 2.0},
        ),
    )
    results = enqueue_many(stack, 40, "gpt-4o-mini")
    stack.start_workers(1, pool="threads", concurrency=4)
    assert stack.config is not None
    deadline = time.monotonic() + 30
    while fair_queued(stack) < 20:
        assert time.monotonic() < deadline, "tasks should wait in the fair queue"
        time.sleep(0.1)
    stack.stop_workers()
    # A dispatcher that dies right after its pass: what it released is published nowhere.
    client = redis.Redis.from_url(stack.config.redis.url)
    scheduler = FairScheduler(RedisLimiter(client, keys=KeyBuilder()), stack.config.scheduler.lanes)
    group = stack.config.limit_group(stack.config.groups["emu:mini"])
    lost = 0
    deadline = time.monotonic() + 10
    while lost < 3 and time.monotonic() < deadline:
        lost += len(scheduler.run_pass(group).released)
        time.sleep(0.2)
    assert lost >= 3
    stack.start_workers(1, pool="threads", concurrency=4)
    wait_all(results, timeout_s=90)
    assert all(r.successful() for r in results)
    assert stack.emulator_stats()["admitted"] == 40, "each task ran exactly once"


# -- 5. a 429 storm: no task fails, no retry budget burnt, no early retry -------------


def test_a_storm_of_429s_is_waited_out(stacks: list[LocalStack]) -> None:
    stack = strict_stack(stacks)
    stack.start_workers(2, pool="threads", concurrency=16)
    inject_429s(stack, in_s=2.0, duration_s=5.0, retry_after_s=1)
    results = enqueue_many(stack, 250, "gpt-4o-mini")
    wait_all(results, timeout_s=120)
    stats = stack.emulator_stats()
    assert all(r.successful() for r in results)
    facts = [r.result["throttle"] for r in results]
    assert sum(f["rate_limited"] for f in facts) >= 1, "the storm should have been seen"
    assert all(f["celery_retries"] == 0 for f in facts)
    assert stats["refused"].get("fault:rate_limit", 0) >= 1
    assert stats["early_retries"] == 0


# -- 6. bad input: clear typed errors, nothing lost -----------------------------------


def test_bad_requests_fail_at_enqueue_with_typed_errors(stacks: list[LocalStack]) -> None:
    stack = start(
        stacks,
        emulator({"default": ("gpt-4o-mini", "requests=20/s,tokens=2000/s")}),
        throttle_doc(
            {"emu:mini": {"models": ["gpt-4o-mini"], "requests": "20/s", "tokens": "2000/s"}}
        ),
    )
    with pytest.raises(CostExceedsCapacityError, match="tokens"):
        stack.enqueue(provider="emu", model="gpt-4o-mini", messages=PROMPT, max_tokens=5000)
    with pytest.raises(UnknownGroupError, match="gpt-5"):
        stack.enqueue(provider="emu", model="gpt-5", messages=PROMPT, max_tokens=10)
    with pytest.raises(UnknownGroupError, match="nobody"):
        stack.enqueue(provider="nobody", model="gpt-4o-mini", messages=PROMPT, max_tokens=10)
    with pytest.raises(InvalidRequestError):
        stack.enqueue(provider="emu", model="gpt-4o-mini", messages="hi", max_tokens=10)
    with pytest.raises(InvalidRequestError):
        stack.enqueue(provider="emu", model="gpt-4o-mini", messages=[{"x": 1}], max_tokens=10)
    with pytest.raises(InvalidRequestError):
        stack.enqueue(provider="emu", model="gpt-4o-mini", messages=PROMPT, max_tokens=0)


def test_enqueue_takes_the_sdks_shape_and_refuses_what_it_does_not_know(
    stacks: list[LocalStack],
) -> None:
    """SDK keywords reach the provider's params (they once became message properties
    and were lost), the output limit may be named either way or come from the group,
    and an unknown keyword queues nothing."""
    import base64
    import json

    stack = start(
        stacks,
        emulator({"default": ("gpt-4o-mini", "requests=20/s,tokens=20000/s")}),
        throttle_doc(
            {
                "emu:mini": {
                    "models": ["gpt-4o-mini"],
                    "requests": "20/s",
                    "tokens": "20000/s",
                    "default_max_tokens": 64,
                }
            }
        ),
    )
    assert stack.config is not None
    broker = redis.Redis.from_url(stack.config.broker_url)
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]

    def sent() -> dict[str, Any]:
        [raw] = broker.lrange(stack.config.celery.queue, 0, -1)  # type: ignore[union-attr]
        broker.delete(stack.config.celery.queue)  # type: ignore[union-attr]
        envelope = json.loads(raw)
        kwargs: dict[str, Any] = json.loads(base64.b64decode(envelope["body"]))[1]
        assert "temperature" not in envelope["properties"], "not a message property"
        return kwargs

    stack.enqueue(provider="emu", model="gpt-4o-mini", messages=PROMPT, temperature=0.2,
                  tools=tools, params={"seed": 7})  # fmt: skip
    kwargs = sent()
    assert kwargs["params"] == {"seed": 7, "temperature": 0.2, "tools": tools}
    assert kwargs["max_tokens"] == 64, "the group's default"
    stack.enqueue(provider="emu", model="gpt-4o-mini", messages=PROMPT, max_completion_tokens=9)
    assert sent()["max_tokens"] == 9
    with pytest.raises(InvalidRequestError, match="frobnicate"):
        stack.enqueue(provider="emu", model="gpt-4o-mini", messages=PROMPT, frobnicate=1)
    with pytest.raises(InvalidRequestError, match="differ"):
        stack.enqueue(
            provider="emu", model="gpt-4o-mini", messages=PROMPT, max_tokens=5,
            max_completion_tokens=6,
        )  # fmt: skip
    with pytest.raises(InvalidRequestError, match="both"):
        stack.enqueue(provider="emu", model="gpt-4o-mini", messages=PROMPT, seed=1,
                      params={"seed": 2})  # fmt: skip
    assert broker.llen(stack.config.celery.queue) == 0, "nothing queued"


def test_a_worker_refuses_what_it_cannot_run_with_a_typed_failure(stacks: list[LocalStack]) -> None:
    stack = start(
        stacks,
        emulator({"default": ("gpt-4o-mini", "requests=20/s,tokens=2000/s")}),
        throttle_doc(
            {"emu:mini": {"models": ["gpt-4o-mini"], "requests": "20/s", "tokens": "2000/s"}}
        ),
    )
    stack.start_workers(1, pool="threads", concurrency=4)
    from tasks.completion import complete

    assert stack.app is not None
    stack.app.set_current()
    # Sent around enqueue's checks, as an old or foreign client might.
    too_big = complete.apply_async(
        kwargs={"provider": "emu", "model": "gpt-4o-mini", "messages": PROMPT, "max_tokens": 5000}
    )
    unknown = complete.apply_async(
        kwargs={"provider": "emu", "model": "gpt-5", "messages": PROMPT, "max_tokens": 10}
    )
    fine = stack.enqueue(provider="emu", model="gpt-4o-mini", messages=PROMPT, max_tokens=10)
    wait_all([too_big, unknown, fine], timeout_s=30)
    assert isinstance(too_big.result, CostExceedsCapacityError)
    assert isinstance(unknown.result, UnknownGroupError)
    assert fine.successful()


def test_unreachable_limiter_redis_waits_and_loses_nothing(stacks: list[LocalStack]) -> None:
    port = free_port()
    stack = start(
        stacks,
        emulator({"default": ("gpt-4o-mini", "requests=20/s,tokens=1000000/s")}),
        throttle_doc(
            {"emu:mini": {"models": ["gpt-4o-mini"], "requests": "20/s", "tokens": "1000000/s"}},
            redis={"socket_timeout_s": 0.5},
        ),
    )
    # Point the workers' limiter at a Redis that is not there yet; the broker is fine.
    text = stack.config_path.read_text().replace(
        stack.config.redis.url if stack.config else "", f"redis://127.0.0.1:{port}/0"
    )
    stack.config_path.write_text(text)
    stack.start_workers(1, pool="threads", concurrency=8)
    results = enqueue_many(stack, 20, "gpt-4o-mini")
    time.sleep(3)
    assert not any(r.ready() for r in results), "fail closed: nothing runs unthrottled"
    with EmbeddedRedis(port=port):
        wait_all(results, timeout_s=90)
        assert all(r.successful() for r in results)
    assert stack.emulator_stats()["admitted"] == 20


def test_fail_open_runs_unthrottled_while_the_limiter_redis_is_away(
    stacks: list[LocalStack],
) -> None:
    """``failure_policy = "open"``: with the limiter's Redis unreachable, tasks still run,
    unthrottled (the group's own choice), each exactly once; the closed group beside it
    waits."""
    port = free_port()
    stack = start(
        stacks,
        emulator(
            {
                "default": ("gpt-4o-mini", "requests=100/s,tokens=1000000/s"),
                "other": ("gpt-4o", "requests=100/s,tokens=1000000/s"),
            }
        ),
        throttle_doc(
            {
                "emu:mini": {
                    "models": ["gpt-4o-mini"],
                    "requests": "20/s",
                    "tokens": "1000000/s",
                    "failure_policy": "open",
                },
                "emu:4o": {"models": ["gpt-4o"], "requests": "20/s", "tokens": "1000000/s"},
            },
            redis={"socket_timeout_s": 0.5},
        ),
    )
    text = stack.config_path.read_text().replace(
        stack.config.redis.url if stack.config else "", f"redis://127.0.0.1:{port}/0"
    )
    stack.config_path.write_text(text)
    stack.start_workers(1, pool="threads", concurrency=8)
    open_group = enqueue_many(stack, 20, "gpt-4o-mini")
    closed_group = enqueue_many(stack, 5, "gpt-4o")
    wait_all(open_group, timeout_s=60, stack=stack)
    assert all(r.successful() for r in open_group)
    assert not any(r.ready() for r in closed_group), "the closed group waits for Redis"
    assert admitted(stack.emulator_stats(), "default", "requests") == 20


def test_unreachable_broker_is_a_storage_error_at_enqueue() -> None:
    doc = throttle_doc(
        {"emu:mini": {"models": ["gpt-4o-mini"], "requests": "20/s", "tokens": "1000/s"}}
    )
    doc["providers"]["emu"]["base_url"] = "http://127.0.0.1:9"
    doc["celery"] = {"broker_url": f"redis://127.0.0.1:{free_port()}/0"}
    from throttle.config import config_from_dict
    from workers.app import create_app

    app = create_app(config_from_dict(doc))
    app.conf.broker_connection_timeout = 0.5
    app.conf.broker_connection_max_retries = 0
    app.conf.task_publish_retry_policy = {"max_retries": 0}
    app.conf.result_backend_transport_options = {
        "retry_policy": {"max_retries": 1, "interval_start": 0, "interval_step": 0.1}
    }
    from tasks.completion import enqueue

    with pytest.raises(StorageError, match="nothing was queued"):
        enqueue(provider="emu", model="gpt-4o-mini", messages=PROMPT, max_tokens=10)

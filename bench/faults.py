"""Break a running stack and count what survives (issue 12). Run by hand, never in CI::

    .venv/bin/python bench/faults.py                  # every fault, about 8 minutes
    .venv/bin/python bench/faults.py --only redis-kill-aof,cluster

Each fault hits a stack of 2 workers (-P threads -c 8), the emulator and 200 completions
against a group of 20 requests/s (so the run lasts about 10 s and the fault lands
mid-run, 3 s in). What is counted: tasks that succeeded, failed or never finished,
whether both workers are still alive, and provider calls beyond one per task (a call
in flight when a worker or Redis died may be made twice; at most the calls then in
flight is the target). The table shows the result of the fault as the issue found it
(filed 2026-12, before the reliability work) next to today's.

Markdown goes to stdout; raw JSON to ``bench/results/faults-<time>.json``.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.results_file import machine, write_raw  # noqa: E402
from testing.emulator import (  # noqa: E402
    EmulatorConfig,
    LatencyConfig,
    PoolConfig,
    parse_limits_text,
)
from testing.harness import COMPRESSED_HEADROOM, LocalStack  # noqa: E402
from testing.replicated import EmbeddedCluster, EmbeddedSentinelSet  # noqa: E402
from throttle.errors import ThrottleError  # noqa: E402
from throttle.keys import KeyBuilder  # noqa: E402

PROMPT = [{"role": "user", "content": "Say hello."}]
TASKS = 200
THREADS = 8
FAULT_AT_S = 3.0
GROUP = "emu:mini"


@dataclass
class Outcome:
    fault: str
    before: str
    tasks: int = 0
    succeeded: int = 0
    failed: int = 0
    unfinished: int = 0
    workers_alive: str = ""
    extra_calls: int | None = None
    in_flight: int | None = None
    note: str = ""
    seconds: float = 0.0

    def now(self) -> str:
        if not self.tasks:
            return self.note
        parts = [f"{self.succeeded}/{self.tasks} succeed"]
        if self.failed:
            parts.append(f"{self.failed} failed")
        if self.unfinished:
            parts.append(f"{self.unfinished} unfinished")
        if self.workers_alive:
            parts.append(f"workers alive: {self.workers_alive}")
        if self.extra_calls is not None:
            parts.append(f"extra provider calls {self.extra_calls} (in flight {self.in_flight})")
        if self.note:
            parts.append(self.note)
        return "; ".join(parts)


def emulator_config() -> EmulatorConfig:
    limits = parse_limits_text("requests=100/s,tokens=1000000/s")
    return EmulatorConfig(
        pools=(PoolConfig("default", limits, models=("gpt-4o-mini",)),),
        latency=LatencyConfig(ttft_ms=100),
    )


def throttle_doc(**sections: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "providers": {"emu": {"profile": "openai", "base_url": "emulator"}},
        "groups": {
            GROUP: {
                "provider": "emu",
                "models": ["gpt-4o-mini"],
                "headroom": COMPRESSED_HEADROOM,
                "requests": "20/s",
                "tokens": "1000000/s",
            }
        },
        "celery": {"visibility_timeout_s": 8},
        "worker": {"release_stale_s": 3.0},
    }
    for name, values in sections.items():
        doc[name] = {**doc.get(name, {}), **values}
    return doc


def started(appendonly: bool = False, **sections: Any) -> LocalStack:
    stack = LocalStack(
        emulator_config(), throttle_doc(**sections), redis_appendonly=appendonly
    ).start()
    stack.start_workers(2, pool="threads", concurrency=THREADS)
    return stack


def enqueue(stack: LocalStack, count: int) -> list[Any]:
    return [
        stack.enqueue(provider="emu", model="gpt-4o-mini", messages=PROMPT, max_tokens=16)
        for _ in range(count)
    ]


def in_flight(stack: LocalStack) -> int:
    assert stack.app is not None
    inspect = stack.app.control.inspect(timeout=1.0)
    return sum(
        len(tasks)
        for kind in (inspect.active(), inspect.reserved())
        for tasks in (kind or {}).values()
    )


def settle(results: list[Any], timeout_s: float) -> tuple[int, int, int]:
    """(succeeded, failed, unfinished) once all are ready or ``timeout_s`` passed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not all(r.ready() for r in results):
        time.sleep(0.5)
    ok = sum(r.ready() and r.successful() for r in results)
    failed = sum(r.ready() and not r.successful() for r in results)
    return ok, failed, len(results) - ok - failed


def count(outcome: Outcome, stack: LocalStack, results: list[Any], timeout_s: float = 120) -> None:
    outcome.tasks = len(results)
    outcome.succeeded, outcome.failed, outcome.unfinished = settle(results, timeout_s)
    alive = sum(w.poll() is None for w in stack.workers)
    outcome.workers_alive = f"{alive} of {len(stack.workers)}"


def extra_calls(outcome: Outcome, stack: LocalStack, flying: int) -> None:
    outcome.extra_calls = int(stack.emulator_stats()["admitted"]) - outcome.tasks
    outcome.in_flight = flying


# -- the faults ---------------------------------------------------------------------------


def kill_workers(which: int) -> Callable[[Outcome], None]:
    """SIGKILL ``which`` workers (1 or 2) 3 s in; as many fresh ones are started."""

    def run(outcome: Outcome) -> None:
        with started() as stack:
            results = enqueue(stack, TASKS)
            time.sleep(FAULT_AT_S)
            flying = in_flight(stack)
            for index in range(which):
                stack.kill_worker(index)
            stack.start_workers(which, pool="threads", concurrency=THREADS)
            count(outcome, stack, results)
            outcome.workers_alive = ""
            outcome.note = f"{which} killed, {which} started"
            extra_calls(outcome, stack, flying)

    return run


def provider_down(outcome: Outcome) -> None:
    with started() as stack:
        results = enqueue(stack, TASKS)
        time.sleep(FAULT_AT_S)
        stack.emulator.stop()  # connection refused for 10 s
        time.sleep(10)
        stack.emulator.start()
        count(outcome, stack, results)


def provider_500s(outcome: Outcome) -> None:
    with started() as stack:
        results = enqueue(stack, TASKS)
        now_s = stack.emulator_stats()["now_s"]
        fault = {"kind": "server_error", "start_s": now_s + FAULT_AT_S, "duration_s": 10.0}
        stack.emulator_post("/__emu/faults", {"faults": [fault]})
        count(outcome, stack, results)


def redis_restart(sig: int, appendonly: bool) -> Callable[[Outcome], None]:
    """End Redis with ``sig`` 3 s in, start it again on its port 5 s later; then send
    20 more tasks. Without persistence the first 200 are gone with Redis's memory
    (queued work and the results of finished ones alike): only the 20 count then."""

    def run(outcome: Outcome) -> None:
        with started(appendonly=appendonly) as stack:
            before = enqueue(stack, TASKS)
            time.sleep(FAULT_AT_S)
            flying = in_flight(stack)
            stack.redis.crash(sig)
            time.sleep(5)
            stack.redis.start()
            after = enqueue(stack, 20)
            if appendonly:
                count(outcome, stack, before + after, timeout_s=90)
                extra_calls(outcome, stack, flying)
                return
            count(outcome, stack, after, timeout_s=60)
            done_before, _, _ = settle(before, 0)
            reached = int(stack.emulator_stats()["admitted"]) - outcome.succeeded
            outcome.note = (
                f"of the {TASKS} sent before, {TASKS - done_before} have no result: queued work"
                f" and results went with Redis's memory ({reached} had reached the provider)"
            )

    return run


def garbage(outcome: Outcome) -> None:
    """200 random messages sent by name (tests/test_message_fuzz.py's generator)."""
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from test_message_fuzz import garbage as one_garbage

    from workers.publish import COMPLETE_TASK

    with started() as stack:
        assert stack.app is not None
        rng = random.Random(20261204)
        results = [
            stack.app.send_task(COMPLETE_TASK, args=a, kwargs=k)
            for a, k in (one_garbage(rng) for _ in range(200))
        ]
        settle(results, 120)
        untyped = sum(r.failed() and not isinstance(r.result, ThrottleError) for r in results)
        outcome.tasks = len(results)
        outcome.succeeded = sum(r.successful() for r in results)
        outcome.failed = sum(r.failed() for r in results)
        outcome.unfinished = sum(not r.ready() for r in results)
        outcome.note = f"untyped exceptions: {untyped}"
        alive = sum(w.poll() is None for w in stack.workers)
        outcome.workers_alive = f"{alive} of 2"


def ctrl_c(outcome: Outcome) -> None:
    """bench/demo_stop.py, 5 runs: SIGINT at a random moment of ``make demo``."""
    from bench.demo_stop import one_run

    rng = random.Random(6)
    runs = [one_run(n, 30.0, rng) for n in range(1, 6)]
    # 130: stopped by the demo; -2: the interpreter itself ended by SIGINT, still starting
    within = sum(r.stop_s <= 5.0 and r.exit_code in (0, 130, -signal.SIGINT) for r in runs)
    outcome.note = (
        f"{within} of {len(runs)} runs stopped within 5 s ({min(r.stop_s for r in runs):.1f}-"
        f"{max(r.stop_s for r in runs):.1f} s), {sum(r.left_behind for r in runs)} processes"
        " left behind (bench/demo_stop.py for 20 runs)"
    )


def cluster_failover(outcome: Outcome) -> None:
    """The limiter on a 3-master Redis Cluster; the master owning the group's slot is
    SIGKILLed 3 s in and its replica promoted."""
    with EmbeddedCluster(masters=3, replicas=1) as cluster:
        stack = started(redis={"url": cluster.url})
        with stack:
            results = enqueue(stack, TASKS)
            time.sleep(FAULT_AT_S)
            flying = in_flight(stack)
            t0 = time.monotonic()
            cluster.fail_over(KeyBuilder().state(GROUP))
            outcome.note = f"failover took {time.monotonic() - t0:.1f} s"
            count(outcome, stack, results)
            extra_calls(outcome, stack, flying)


def sentinel_failover(outcome: Outcome) -> None:
    """Limiter, broker and results on one Sentinel-managed master, SIGKILLed 3 s in."""
    with EmbeddedSentinelSet() as sentinel:
        celery = {"broker_url": sentinel.url(1), "result_backend": sentinel.url(2)}
        stack = started(redis={"url": sentinel.url(0)}, celery=celery)
        with stack:
            results = enqueue(stack, TASKS)
            time.sleep(FAULT_AT_S)
            flying = in_flight(stack)
            t0 = time.monotonic()
            sentinel.fail_over()
            outcome.note = f"failover took {time.monotonic() - t0:.1f} s"
            count(outcome, stack, results)
            extra_calls(outcome, stack, flying)


LOST_AT_RESTART = "both workers exit; tasks sent after the restart stay PENDING"
LOST_WITH_AOF = "both workers exit; 106 tasks PARKED and 3 unacked forever"
FAULTS: dict[str, tuple[str, str, Callable[[Outcome], None]]] = {
    "kill-one": (
        "SIGKILL one worker mid-run",
        "all 300 succeed; extra provider calls <= in flight",
        kill_workers(1),
    ),
    "kill-both": (
        "SIGKILL both workers mid-run",
        "all 300 succeed; extra provider calls <= in flight",
        kill_workers(2),
    ),
    "provider-down": ("provider down 10 s", "all succeed", provider_down),
    "provider-500": ("provider 500s for 10 s", "all succeed", provider_500s),
    "redis-kill": (
        "Redis SIGKILLed, restarted 5 s later, no persistence",
        f"{LOST_AT_RESTART}; 139-140 of 200 lost",
        redis_restart(signal.SIGKILL, False),
    ),
    "redis-term": (
        "Redis SIGTERMed, restarted 5 s later, no persistence",
        LOST_AT_RESTART,
        redis_restart(signal.SIGTERM, False),
    ),
    "redis-kill-aof": (
        "Redis SIGKILLed, restarted 5 s later, AOF",
        LOST_WITH_AOF,
        redis_restart(signal.SIGKILL, True),
    ),
    "redis-term-aof": (
        "Redis SIGTERMed, restarted 5 s later, AOF",
        LOST_WITH_AOF,
        redis_restart(signal.SIGTERM, True),
    ),
    "garbage": (
        "200 raw garbage task messages",
        "7 of 25 raise an untyped TypeError/AttributeError",
        garbage,
    ),
    "ctrl-c": (
        "demo stopped with Ctrl-C under load",
        "once did not stop within 40 s; SIGKILL left orphans",
        ctrl_c,
    ),
    "cluster": (
        "limiter on a 3-master Redis Cluster, a master SIGKILLed",
        "no Cluster client",
        cluster_failover,
    ),
    "sentinel": (
        "limiter, broker, results on a Sentinel master, SIGKILLed",
        "no Sentinel support",
        sentinel_failover,
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="", help=f"comma-separated: {', '.join(FAULTS)}")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()] or list(FAULTS)
    unknown = sorted(set(chosen) - set(FAULTS))
    if unknown:
        parser.error(f"unknown fault(s) {unknown}; known: {', '.join(FAULTS)}")
    outcomes = []
    for name in chosen:
        title, before, run = FAULTS[name]
        outcome = Outcome(title, before)
        t0 = time.monotonic()
        try:
            run(outcome)
        except Exception as exc:  # a fault the bench itself did not survive: say so
            outcome.note = f"bench error: {type(exc).__name__}: {exc}"
        outcome.seconds = round(time.monotonic() - t0, 1)
        outcomes.append(outcome)
        print(f"{name}: {outcome.now()} ({outcome.seconds} s)", file=sys.stderr, flush=True)
    print("| fault | when the issue was filed | now |")
    print("|---|---|---|")
    for o in outcomes:
        print(f"| {o.fault} | {o.before} | {o.now()} |")
    path = write_raw("faults", {"machine": machine(), "outcomes": [asdict(o) for o in outcomes]})
    print(f"raw: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

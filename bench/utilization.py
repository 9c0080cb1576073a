"""Utilization of a binding provider limit, ours against peers, and the throttle's own
cost (issue 4, acceptance point 7). Run by hand, never in CI::

    .venv/bin/python bench/utilization.py --quick     # about 3-4 minutes
    .venv/bin/python bench/utilization.py             # about 12-15 minutes

It starts its own redis-server, provider emulator and Celery workers (LocalStack); every
process it starts is stopped at exit.

**Part 1, utilization.** One emulator with compressed windows (default
``requests=30/s,tokens=200000/s``; requests bind). With 1, 2 and 4 worker processes
(``-P threads -c 16`` each) it runs the subjects below interleaved in rounds
(A B C D A B C D ...), each run on fresh emulator counters (``POST /__emu/reset``) with
a backlog deep enough to saturate the limit:

* ``throttle``: our ``complete`` task through ``enqueue``, limit group equal to the
  emulator's limits, headroom ``--headroom`` (default 0.02, the library default);
* ``celery-rate-limit``: a plain task with Celery's ``rate_limit`` set to limit / N on
  each of the N workers (the limit is per worker process, so this is the honest setting);
  429s retried with ``self.retry(countdown=retry-after)``;
* ``celery-rate-limit-naive`` (full mode, N > 1): the same with the full limit on every
  worker, as one might configure it without reading the docs;
* ``tenacity``: no throttle, 429s retried with the cookbook's tenacity recipe;
* ``cookbook``: one process in the style of the OpenAI cookbook's parallel processor
  (``bench/cookbook.py``) with ``N x 16`` requests in flight at most; it uses no Celery
  worker, so its "worker count" is only its concurrency.

Utilization is the binding dimension's cost the emulator *admitted* (429s excluded)
between two of its own stats samples, over what the limit allows in that time. The
samples are taken every 0.2 s inside the run; the steady part starts one window after
the first admission and ends two windows before the last (tail without backlog).

**Part 2, the throttle's cost.** A second emulator with zero latency and limits that
never bind. One worker (``-P threads -c 8``; full mode also ``-P prefork -c 2``) drains
a block of tasks enqueued while its consumer was cancelled: ``complete`` through the
throttle, against ``bench.plain_call`` making the same ``ProviderClient`` call. Blocks
alternate within each round (ABBA); throughput ratios are taken per round. The VM's
speed drifts 2-4x within minutes (../shared/reference/perf-baselines.md), so only
same-round ratios mean anything.

Markdown tables go to stdout; raw JSON to ``bench/results/utilization-<time>.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
import requests

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.cookbook import CookbookProcessor  # noqa: E402
from bench.peer_tasks import (  # noqa: E402
    PLAIN_TASK,
    RATE_LIMITED_TASK,
    TENACITY_TASK,
    task_kwargs,
)
from bench.results_file import machine, write_raw  # noqa: E402
from testing.emulator import (  # noqa: E402
    EmulatorConfig,
    LatencyConfig,
    PoolConfig,
    parse_limits_text,
)
from testing.harness import CREDENTIAL, LocalStack  # noqa: E402
from throttle.providers.client import ProviderClient  # noqa: E402

PROVIDER = "emu"
MODEL = "gpt-4o-mini"
POOL_LABEL = "org-emulator/default"
GROUP = "emu:mini"
PROMPT = [{"role": "user", "content": "Summarise the plot of a short story. " * 3}]
MAX_TOKENS = 60
#: Provider latency in part 1: about a real call's 1-10 s scaled by the window (1 s/60 s).
TTFT_MS = 50.0
TOKENS_PER_S = 1000.0
SAMPLE_INTERVAL_S = 0.2
POLL_INTERVAL_S = 0.25
#: Steady part: skip this many windows after the first admission, and before the last.
SKIP_WINDOWS = 1.0
TAIL_WINDOWS = 2.0
#: Idle time between runs, in windows: our limiter's bucket is full again, as the
#: emulator's is after its reset.
GAP_WINDOWS = 1.5
WORKER_ARGS = ("--include", "bench.peer_tasks")
HUGE_LIMITS = "requests=1000000/s,tokens=1000000000/s"

SUBJECTS = ("throttle", "celery-rate-limit", "celery-rate-limit-naive", "tenacity", "cookbook")


@dataclass(frozen=True)
class Plan:
    """How much to run."""

    name: str
    rounds: int
    steady_s: float
    worker_counts: tuple[int, ...]
    concurrency: int
    subjects: tuple[str, ...]
    overhead_rounds: int
    overhead_tasks: int
    overhead_pools: tuple[tuple[str, int], ...]


QUICK = Plan(
    name="quick",
    rounds=1,
    steady_s=6.0,
    worker_counts=(1, 2, 4),
    concurrency=16,
    subjects=("throttle", "celery-rate-limit", "tenacity", "cookbook"),
    overhead_rounds=5,
    overhead_tasks=300,
    overhead_pools=(("threads", 8),),
)
FULL = Plan(
    name="full",
    rounds=3,
    steady_s=10.0,
    worker_counts=(1, 2, 4),
    concurrency=16,
    subjects=SUBJECTS,
    overhead_rounds=7,
    overhead_tasks=300,
    overhead_pools=(("threads", 8), ("prefork", 2)),
)


@dataclass(frozen=True)
class Limits:
    """The emulator's limits; ``binding`` names the dimension expected to bind."""

    text: str
    binding: str
    requests_per_window: float
    tokens_per_window: float
    window_s: float

    @classmethod
    def parse(cls, text: str, binding: str) -> Limits:
        limits = parse_limits_text(text)
        windows = {lim.window_s for lim in limits.values()}
        if len(windows) != 1 or binding not in limits:
            raise SystemExit(f"--limits {text!r}: one window for all, and must name {binding}")
        return cls(
            text,
            binding,
            limits["requests"].capacity,
            limits["tokens"].capacity,
            windows.pop(),
        )

    @property
    def binding_rate_per_s(self) -> float:
        capacity = (
            self.requests_per_window if self.binding == "requests" else self.tokens_per_window
        )
        return capacity / self.window_s

    def spec(self, capacity: float) -> str:
        return f"{capacity:g}/{self.window_s:g}s"


# -- the stacks -------------------------------------------------------------------------


def emulator_config(limits_text: str, latency: LatencyConfig) -> EmulatorConfig:
    return EmulatorConfig(
        pools=(PoolConfig("default", parse_limits_text(limits_text), models=(MODEL,)),),
        latency=latency,
    )


def throttle_doc(requests_spec: str, tokens_spec: str, headroom: float) -> dict[str, Any]:
    return {
        "providers": {PROVIDER: {"profile": "openai", "base_url": "emulator"}},
        "groups": {
            GROUP: {
                "provider": PROVIDER,
                "models": [MODEL],
                "requests": requests_spec,
                "tokens": tokens_spec,
                "headroom": headroom,
            }
        },
    }


@contextmanager
def local_stack(emulator: EmulatorConfig, doc: Mapping[str, Any]) -> Iterator[LocalStack]:
    stack = LocalStack(emulator, doc).start()
    try:
        yield stack
    finally:
        stack.stop()


def restart_workers(stack: LocalStack, count: int, pool: str, concurrency: int) -> None:
    stack.stop_workers()
    stack.start_workers(count, pool=pool, concurrency=concurrency, extra_args=WORKER_ARGS)


def flush_broker(stack: LocalStack) -> None:
    """Drop every queued, unacknowledged or scheduled message (after a timed-out run)."""
    assert stack.config is not None
    redis.Redis.from_url(stack.config.broker_url).flushdb()


class EmulatorControl:
    """Reset and stats of the stack's emulator over one kept-alive session."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()

    def reset(self) -> None:
        self.session.post(self.base_url + "/__emu/reset", json={}, timeout=10).raise_for_status()

    def stats(self) -> dict[str, Any]:
        return self._get("/__emu/stats")

    def state(self) -> dict[str, Any]:
        return self._get("/__emu/state")

    def _get(self, path: str) -> dict[str, Any]:
        reply = self.session.get(self.base_url + path, timeout=10)
        reply.raise_for_status()
        return reply.json()  # type: ignore[no-any-return]


# -- part 1: utilization ----------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One reading of the emulator's counters at emulator time ``at_s``, and the level
    of the binding dimension's bucket (read just before)."""

    at_s: float
    admitted: int
    binding_cost: float
    binding_level: float
    status_429: int
    early_retries: int


def read_sample(control: EmulatorControl, binding: str) -> Sample:
    level = control.state()["pools"].get(POOL_LABEL, {}).get(binding, {}).get("level", 0.0)
    stats = control.stats()
    dims = stats["pools"].get(POOL_LABEL, {})
    return Sample(
        at_s=float(stats["now_s"]),
        admitted=int(stats["admitted"]),
        binding_cost=float(dims.get(binding, {}).get("admitted_cost", 0.0)),
        binding_level=float(level),
        status_429=int(stats["by_status"].get("429", 0)),
        early_retries=int(stats["early_retries"]),
    )


class Sampler:
    """Reads the emulator's counters every ``interval_s`` from a thread."""

    def __init__(self, control: EmulatorControl, binding: str, interval_s: float) -> None:
        self.control = EmulatorControl(control.base_url)
        self.binding = binding
        self.interval_s = interval_s
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(read_sample(self.control, self.binding))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.samples.append(read_sample(self.control, self.binding))


@dataclass(frozen=True)
class Steady:
    utilization: float | None
    from_s: float
    to_s: float


def steady_utilization(samples: Sequence[Sample], rate_per_s: float, window_s: float) -> Steady:
    """Admitted cost over allowed cost between the samples that bound the steady part.

    Cost admitted out of the emulator bucket's starting burst is not the limit's rate:
    whatever the bucket's level dropped across the steady part is taken off the
    admitted cost (a subject still spending its first burst would read above 100%).
    """
    before_first = [s.at_s for s in samples if s.admitted == 0]
    first_s = before_first[-1] if before_first else 0.0
    final = samples[-1].admitted
    last_s = next(s.at_s for s in samples if s.admitted == final)
    start = next((s for s in samples if s.at_s >= first_s + SKIP_WINDOWS * window_s), None)
    end = next((s for s in reversed(samples) if s.at_s <= last_s - TAIL_WINDOWS * window_s), None)
    if start is None or end is None or end.at_s - start.at_s < window_s:
        return Steady(None, first_s, last_s)
    allowed = rate_per_s * (end.at_s - start.at_s)
    from_burst = max(0.0, start.binding_level - end.binding_level)
    admitted = end.binding_cost - start.binding_cost - from_burst
    return Steady(admitted / allowed, start.at_s, end.at_s)


@dataclass
class RunResult:
    subject: str
    workers: int
    round: int
    tasks: int
    succeeded: int = 0
    failed: int = 0
    unfinished: int = 0
    wall_s: float = 0.0
    utilization: float | None = None
    steady_from_s: float = 0.0
    steady_to_s: float = 0.0
    status_429: int = 0
    early_retries: int = 0
    admitted: int = 0
    notes: dict[str, Any] = field(default_factory=dict)
    samples: list[tuple[float, int, float, float]] = field(default_factory=list)


@dataclass(frozen=True)
class Outcome:
    succeeded: int
    failed: int
    unfinished: int
    notes: Mapping[str, Any] = field(default_factory=dict)


def wait_results(results: Sequence[Any], deadline_s: float) -> Outcome:
    """Poll Celery results until all are ready or ``deadline_s`` (monotonic) passes."""
    pending = list(results)
    while pending and time.monotonic() < deadline_s:
        pending = [r for r in pending if not r.ready()]
        if pending:
            time.sleep(POLL_INTERVAL_S)
    states = [r.state for r in results]  # one read each: counts that add up
    succeeded = states.count("SUCCESS")
    failed = states.count("FAILURE")
    return Outcome(succeeded, failed, len(results) - succeeded - failed)


@dataclass(frozen=True)
class RunContext:
    stack: LocalStack
    limits: Limits
    workers: int
    concurrency: int
    tasks: int
    deadline_s: float
    headroom: float = 0.0


def run_throttle(ctx: RunContext) -> Outcome:
    results = [
        ctx.stack.enqueue(provider=PROVIDER, model=MODEL, messages=PROMPT, max_tokens=MAX_TOKENS)
        for _ in range(ctx.tasks)
    ]
    outcome = wait_results(results, ctx.deadline_s)
    facts = [r.result["throttle"] for r in results if r.ready() and r.successful()]
    notes = {"headroom": ctx.headroom, **lateness_notes(facts)}
    return Outcome(outcome.succeeded, outcome.failed, outcome.unfinished, notes)


def lateness_notes(facts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """How long after its reserved slot each call started (wall clock vs Redis clock,
    one host), and how many tasks were parked: where our utilization goes."""
    late_ms = sorted(
        f["started_ms"] - f["slot_ms"] for f in facts if f.get("slot_ms") and f.get("started_ms")
    )
    if not late_ms:
        return {}
    return {
        "late_ms_p50": round(late_ms[len(late_ms) // 2], 1),
        "late_ms_p95": round(late_ms[int(len(late_ms) * 0.95)], 1),
        "late_ms_max": round(late_ms[-1], 1),
        "early_ms_max": round(max(0.0, -late_ms[0]), 1),
        "parked_share": round(sum(1 for f in facts if f.get("parks")) / len(facts), 3),
    }


def send_peer_tasks(ctx: RunContext, name: str, **extra: Any) -> list[Any]:
    assert ctx.stack.app is not None
    kwargs = {**task_kwargs(PROVIDER, MODEL, PROMPT, MAX_TOKENS), **extra}
    return [ctx.stack.app.send_task(name, kwargs=kwargs) for _ in range(ctx.tasks)]


def set_celery_rate_limit(stack: LocalStack, per_worker_per_s: float, workers: int) -> None:
    assert stack.app is not None
    rate = f"{per_worker_per_s:g}/s"
    replies = stack.app.control.rate_limit(
        RATE_LIMITED_TASK, rate, reply=True, timeout=2.0, limit=workers
    )
    if len(replies or []) != workers:
        raise RuntimeError(f"rate_limit {rate}: {len(replies or [])} of {workers} replied")


def celery_rate_limit_runner(share: Callable[[int], float]) -> Callable[[RunContext], Outcome]:
    """``share(workers)``: the fraction of the limit each worker is given."""

    def run(ctx: RunContext) -> Outcome:
        per_worker_per_s = ctx.limits.requests_per_window / ctx.limits.window_s * share(ctx.workers)
        set_celery_rate_limit(ctx.stack, per_worker_per_s, ctx.workers)
        outcome = wait_results(send_peer_tasks(ctx, RATE_LIMITED_TASK), ctx.deadline_s)
        notes = {"rate_limit_per_worker_per_s": per_worker_per_s}
        return Outcome(outcome.succeeded, outcome.failed, outcome.unfinished, notes)

    return run


def run_tenacity(ctx: RunContext) -> Outcome:
    time_scale = ctx.limits.window_s / 60.0
    return wait_results(send_peer_tasks(ctx, TENACITY_TASK, time_scale=time_scale), ctx.deadline_s)


def run_cookbook(ctx: RunContext) -> Outcome:
    stack = ctx.stack
    concurrency = ctx.workers * ctx.concurrency
    client = ProviderClient(
        "openai", stack.emulator.base_url, CREDENTIAL, environ=stack.env(), pool_size=concurrency
    )
    with client:
        processor = CookbookProcessor(
            client,
            model=MODEL,
            messages=PROMPT,
            max_tokens=MAX_TOKENS,
            requests_limit=ctx.limits.requests_per_window,
            tokens_limit=ctx.limits.tokens_per_window,
            window_s=ctx.limits.window_s,
            concurrency=concurrency,
        )
        tally = processor.run(ctx.tasks)
    notes = {
        "concurrency": concurrency,
        "pause_after_429_s": processor.pause_s,
        "rate_limit_errors_seen": tally.rate_limit_errors,
    }
    return Outcome(tally.succeeded, tally.failed, 0, notes)


RUNNERS: Mapping[str, Callable[[RunContext], Outcome]] = {
    "throttle": run_throttle,
    "celery-rate-limit": celery_rate_limit_runner(lambda workers: 1.0 / workers),
    "celery-rate-limit-naive": celery_rate_limit_runner(lambda workers: 1.0),
    "tenacity": run_tenacity,
    "cookbook": run_cookbook,
}


def tasks_per_run(limits: Limits, steady_s: float) -> int:
    """The first window's burst, the steady part, and the tail."""
    seconds = SKIP_WINDOWS * limits.window_s + steady_s + TAIL_WINDOWS * limits.window_s
    per_s = limits.requests_per_window / limits.window_s
    if limits.binding == "tokens":
        per_s = min(per_s, limits.tokens_per_window / limits.window_s / (MAX_TOKENS + 40))
    return round(per_s * seconds)


def run_once(subject: str, ctx: RunContext, control: EmulatorControl, round_: int) -> RunResult:
    time.sleep(GAP_WINDOWS * ctx.limits.window_s)
    control.reset()
    started_s = time.monotonic()
    with Sampler(control, ctx.limits.binding, SAMPLE_INTERVAL_S) as sampler:
        outcome = RUNNERS[subject](ctx)
        wall_s = time.monotonic() - started_s
    if outcome.unfinished:
        flush_broker(ctx.stack)
        restart_workers(ctx.stack, ctx.workers, "threads", ctx.concurrency)
    samples = sampler.samples
    steady = steady_utilization(samples, ctx.limits.binding_rate_per_s, ctx.limits.window_s)
    last = samples[-1]
    return RunResult(
        subject=subject,
        workers=ctx.workers,
        round=round_,
        tasks=ctx.tasks,
        succeeded=outcome.succeeded,
        failed=outcome.failed,
        unfinished=outcome.unfinished,
        wall_s=wall_s,
        utilization=steady.utilization,
        steady_from_s=steady.from_s,
        steady_to_s=steady.to_s,
        status_429=last.status_429,
        early_retries=last.early_retries,
        admitted=last.admitted,
        notes=dict(outcome.notes),
        samples=[(s.at_s, s.admitted, s.binding_cost, s.binding_level) for s in samples],
    )


def subjects_for(plan: Plan, workers: int) -> list[str]:
    naive_is_honest = workers == 1
    return [s for s in plan.subjects if not (s == "celery-rate-limit-naive" and naive_is_honest)]


def run_utilization(plan: Plan, limits: Limits, headroom: float) -> list[RunResult]:
    emulator = emulator_config(
        limits.text, LatencyConfig(ttft_ms=TTFT_MS, tokens_per_s=TOKENS_PER_S)
    )
    doc = throttle_doc(
        limits.spec(limits.requests_per_window), limits.spec(limits.tokens_per_window), headroom
    )
    tasks = tasks_per_run(limits, plan.steady_s)
    expected_s = tasks / limits.binding_rate_per_s if limits.binding == "requests" else 20.0
    runs: list[RunResult] = []
    with local_stack(emulator, doc) as stack:
        control = EmulatorControl(stack.emulator.base_url)
        for workers in plan.worker_counts:
            restart_workers(stack, workers, "threads", plan.concurrency)
            for round_ in range(plan.rounds):
                for subject in subjects_for(plan, workers):
                    deadline_s = time.monotonic() + 4 * expected_s + 20
                    ctx = RunContext(
                        stack, limits, workers, plan.concurrency, tasks, deadline_s, headroom
                    )
                    result = run_once(subject, ctx, control, round_)
                    runs.append(result)
                    print_run(result)
        stack.stop_workers()
    return runs


def print_run(run: RunResult) -> None:
    util = "n/a" if run.utilization is None else f"{run.utilization:.1%}"
    print(
        f"  workers={run.workers} round={run.round} {run.subject:<24} util={util:>6}"
        f" 429s={run.status_429:<5} early={run.early_retries:<4} wall={run.wall_s:6.1f}s"
        f" ok={run.succeeded}/{run.tasks} failed={run.failed} unfinished={run.unfinished}"
        f" {run.notes}",
        flush=True,
    )


# -- part 2: the throttle's own cost ----------------------------------------------------


@dataclass
class Block:
    subject: str
    pool: str
    concurrency: int
    round: int
    tasks: int
    tasks_per_s: float
    failed: int


def pause_consuming(stack: LocalStack, queue: str, paused: bool) -> None:
    assert stack.app is not None
    if paused:
        stack.app.control.cancel_consumer(queue, reply=True, timeout=2.0, limit=1)
    else:
        stack.app.control.add_consumer(queue, reply=True, timeout=2.0, limit=1)


def send_block(stack: LocalStack, subject: str, count: int) -> list[Any]:
    assert stack.app is not None
    if subject == "throttle":
        return [
            stack.enqueue(provider=PROVIDER, model=MODEL, messages=PROMPT, max_tokens=MAX_TOKENS)
            for _ in range(count)
        ]
    kwargs = task_kwargs(PROVIDER, MODEL, PROMPT, MAX_TOKENS)
    return [stack.app.send_task(PLAIN_TASK, kwargs=kwargs) for _ in range(count)]


def wait_admitted(control: EmulatorControl, count: int, deadline_s: float) -> None:
    """Wait, cheaply, until the emulator has admitted ``count`` requests."""
    while control.stats()["admitted"] < count and time.monotonic() < deadline_s:
        time.sleep(0.1)


def utc_timestamp(moment: datetime) -> float:
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def drain_block(
    stack: LocalStack, control: EmulatorControl, subject: str, count: int
) -> tuple[float, int]:
    """Tasks/s from releasing the consumer to the last result stored (its date_done),
    and how many tasks did not succeed."""
    assert stack.config is not None
    queue = stack.config.celery.queue
    control.reset()
    pause_consuming(stack, queue, paused=True)
    results = send_block(stack, subject, count)
    started_at_s = time.time()
    pause_consuming(stack, queue, paused=False)
    deadline_s = time.monotonic() + 120
    wait_admitted(control, count, deadline_s)
    outcome = wait_results(results, deadline_s)
    done_at_s = max(utc_timestamp(r.date_done) for r in results if r.ready())
    tasks_per_s = count / max(1e-6, done_at_s - started_at_s)
    return tasks_per_s, outcome.failed + outcome.unfinished


def run_overhead(plan: Plan) -> list[Block]:
    emulator = emulator_config(HUGE_LIMITS, LatencyConfig())
    huge = parse_limits_text(HUGE_LIMITS)
    doc = throttle_doc(huge["requests"].to_spec(), huge["tokens"].to_spec(), 0.02)
    blocks: list[Block] = []
    with local_stack(emulator, doc) as stack:
        control = EmulatorControl(stack.emulator.base_url)
        for pool, concurrency in plan.overhead_pools:
            restart_workers(stack, 1, pool, concurrency)
            for subject in ("throttle", "plain"):  # warm-up, discarded
                drain_block(stack, control, subject, 100)
            for round_ in range(plan.overhead_rounds):
                order = ("throttle", "plain") if round_ % 2 == 0 else ("plain", "throttle")
                for subject in order:
                    count = plan.overhead_tasks
                    tasks_per_s, failed = drain_block(stack, control, subject, count)
                    block = Block(subject, pool, concurrency, round_, count, tasks_per_s, failed)
                    blocks.append(block)
                    print(
                        f"  {pool} -c {concurrency} round={round_} {subject:<8}"
                        f" {block.tasks_per_s:7.1f} tasks/s failed={block.failed}",
                        flush=True,
                    )
        stack.stop_workers()
    return blocks


# -- report -----------------------------------------------------------------------------


def fmt_pct(values: Sequence[float]) -> str:
    if not values:
        return "n/a"
    median = statistics.median(values)
    if len(values) == 1:
        return f"{median:.1%}"
    return f"{median:.1%} ({min(values):.1%}-{max(values):.1%})"


def utilization_table(runs: Sequence[RunResult], limits: Limits) -> str:
    lines = [
        f"Binding limit: {limits.binding} of `{limits.text}`; median over rounds (min-max).",
        "",
        "| subject | workers | utilization | provider 429s | early retries | wall s"
        " | completed / failed / unfinished |",
        "|---|---|---|---|---|---|---|",
    ]
    keys = sorted(
        {(r.subject, r.workers) for r in runs}, key=lambda k: (SUBJECTS.index(k[0]), k[1])
    )
    for subject, workers in keys:
        group = [r for r in runs if r.subject == subject and r.workers == workers]
        utils = [r.utilization for r in group if r.utilization is not None]
        lines.append(
            f"| {subject} | {workers} | {fmt_pct(utils)}"
            f" | {sum(r.status_429 for r in group)} | {sum(r.early_retries for r in group)}"
            f" | {statistics.median(r.wall_s for r in group):.1f}"
            f" | {sum(r.succeeded for r in group)} / {sum(r.failed for r in group)}"
            f" / {sum(r.unfinished for r in group)} |"
        )
    return "\n".join(lines)


def overhead_table(blocks: Sequence[Block]) -> str:
    lines = [
        "| pool | plain tasks/s (median) | throttled tasks/s (median) | per-round ratio"
        " | median ratio | target >= 0.85x |",
        "|---|---|---|---|---|---|",
    ]
    for pool, concurrency in sorted({(b.pool, b.concurrency) for b in blocks}):
        mine = [b for b in blocks if b.pool == pool]
        ratios = overhead_ratios(mine)
        plain = statistics.median(b.tasks_per_s for b in mine if b.subject == "plain")
        ours = statistics.median(b.tasks_per_s for b in mine if b.subject == "throttle")
        median_ratio = statistics.median(ratios)
        lines.append(
            f"| {pool} -c {concurrency} | {plain:.0f} | {ours:.0f}"
            f" | {', '.join(f'{r:.2f}' for r in ratios)} | **{median_ratio:.2f}x**"
            f" | {'PASS' if median_ratio >= 0.85 else 'FAIL'} |"
        )
    return "\n".join(lines)


def overhead_ratios(blocks: Sequence[Block]) -> list[float]:
    by_round: dict[int, dict[str, float]] = {}
    for block in blocks:
        by_round.setdefault(block.round, {})[block.subject] = block.tasks_per_s
    return [r["throttle"] / r["plain"] for _, r in sorted(by_round.items())]


def verdict(runs: Sequence[RunResult]) -> str:
    ours = [r for r in runs if r.subject == "throttle"]
    lines = []
    for workers in sorted({r.workers for r in ours}):
        group = [r for r in ours if r.workers == workers]
        utils = [r.utilization for r in group if r.utilization is not None]
        worst = min(utils) if utils else 0.0
        errors = sum(r.status_429 for r in group)
        ok = worst >= 0.98 and errors == 0 and all(r.failed + r.unfinished == 0 for r in group)
        lines.append(
            f"- throttle, {workers} worker(s): worst utilization {worst:.1%}, {errors} 429s:"
            f" {'PASS' if ok else 'FAIL'} (target >= 98%, zero 429s)"
        )
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round, about 3-4 minutes")
    parser.add_argument("--limits", default="requests=30/s,tokens=200000/s")
    parser.add_argument("--binding", default="requests", choices=("requests", "tokens"))
    parser.add_argument("--headroom", type=float, default=0.02, help="our group's headroom")
    parser.add_argument("--workers", help="worker counts, e.g. 1,2,4")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--subjects", help=f"comma separated, of {', '.join(SUBJECTS)}")
    parser.add_argument("--skip-utilization", action="store_true")
    parser.add_argument("--skip-overhead", action="store_true")
    return parser.parse_args(argv)


def plan_from(args: argparse.Namespace) -> Plan:
    plan = QUICK if args.quick else FULL
    changes: dict[str, Any] = {}
    if args.workers:
        changes["worker_counts"] = tuple(int(n) for n in args.workers.split(","))
    if args.rounds:
        changes["rounds"] = args.rounds
        changes["overhead_rounds"] = max(2, args.rounds)
    if args.subjects:
        unknown = set(args.subjects.split(",")) - set(SUBJECTS)
        if unknown:
            raise SystemExit(f"unknown subjects: {sorted(unknown)}")
        changes["subjects"] = tuple(args.subjects.split(","))
    return Plan(**{**asdict(plan), **changes})


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    plan = plan_from(args)
    limits = Limits.parse(args.limits, args.binding)
    # Workers run ``--include bench.peer_tasks``: the repo root must be importable there.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])
    )
    started_s = time.monotonic()
    payload: dict[str, Any] = {
        "plan": asdict(plan),
        "machine": machine(),
        "headroom": args.headroom,
    }
    payload["limits"] = asdict(limits)
    sections: list[str] = []
    if not args.skip_utilization:
        print(
            f"part 1: utilization ({plan.name}, {tasks_per_run(limits, plan.steady_s)} tasks/run)"
        )
        runs = run_utilization(plan, limits, args.headroom)
        payload["utilization"] = [asdict(r) for r in runs]
        sections += ["### Utilization of the binding limit", utilization_table(runs, limits)]
        sections += ["", verdict(runs)]
    if not args.skip_overhead:
        print("part 2: the throttle's own cost")
        blocks = run_overhead(plan)
        payload["overhead"] = [asdict(b) for b in blocks]
        sections += ["", "### Throttle cost, limits never binding", overhead_table(blocks)]
    payload["elapsed_s"] = time.monotonic() - started_s
    path = write_raw("utilization", payload)
    print()
    print("\n".join(sections))
    print(f"\nraw results: {path.relative_to(REPO_ROOT)}; took {payload['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

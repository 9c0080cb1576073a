"""The adaptive rate controller (issue 5) measured end to end, with real Celery workers
and the provider emulator. Run by hand, never in CI::

    .venv/bin/python bench/adaptive.py              # every scenario, 1 and 4 workers: ~4 min
    .venv/bin/python bench/adaptive.py --only no-headers --workers 4 --repeat 3
    .venv/bin/python bench/adaptive.py --only no-headers --group aimd.decrease=0.5

Every run starts its own LocalStack (redis-server, emulator, ``N`` worker processes
``-P threads``, 32 threads in all); every process it starts is stopped at exit. The
backlog is queued while the workers' consumers are cancelled, so all of them start at
once, at the beginning of the first window.

Windows are compressed: ``--window-s`` (default 1 s) stands for the minute of a
production limit (60 s windows). Every limit, the emulator's and the group's, is a
number per window (``20/1s``), so the clean window that raises the AIMD multiplier and
the epoch of a decrease scale with it; worker timings (hold horizon 2 s, pause jitter
0.05-0.25 s, latency 20 ms) do not, nor does an OpenAI Retry-After (whole seconds, at
least 1: one 429 pauses the group for a whole compressed window), so compressed windows
are the harder case.

Scenarios (issue 5's acceptance points; ``SCENARIOS`` maps a name to its function):

1. ``over-configured``: the group's ceiling is twice the emulator's limit (OpenAI
   profile, headers): 429s <= 2% of requests, utilization >= 90% from window 2 on.
2. ``silent-drop``: the emulator halves its limit after a third of the windows, without
   notice (``POST /__emu/limits``): 429s <= 1% again within 2 windows.
3. ``silent-rise``: the emulator doubles its limit, the ceiling allows it: the new
   capacity is used (>= 90%) within 3 windows.
5. ``no-headers``: Gemini profile (no rate-limit headers, AIMD alone), ceiling 2x:
   converged within 5 windows, <= 5% 429s overall. Converged: from that window on, the
   AIMD sawtooth costs at most 2% 429s (the target of a limit with headers).
6. ``herd``: 64 requests in flight at once all get a 429 (an emulator fault with
   ``max_hits = 64`` answered 2 s after each arrival; Gemini profile, so no headers):
   exactly one AIMD decrease.

4. ``auto-headers``: no number configured (``requests = "auto"``, which starts at 1
   request/s), OpenAI headers: no 429s and utilization >= 95% from the second window.
5b. ``auto-no-headers``: no number and no headers (Gemini): AIMD discovers the limit
   from 1 request/s (doubling per clean window until the first 429); judged as 5.

A scenario is one function registered with ``@scenario(name, number, target)``.

Per run: the share of 429s among requests the emulator answered, utilization per
window (admitted / the emulator's true limit, scaled by the window's measured length),
windows until a target holds again, and the AIMD multiplier read from Redis at each
window's end (``llm-throttle status``'s reader). ``--group`` and ``--worker`` set
group and ``[worker]`` options for experiments (configuration only). Markdown tables go
to stdout; raw JSON to ``bench/results/adaptive-<time>.json``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.results_file import machine, write_raw  # noqa: E402
from testing.emulator import (  # noqa: E402
    EmulatorConfig,
    FaultConfig,
    FaultKind,
    LatencyConfig,
    PoolConfig,
    Profile,
    parse_limits_text,
)
from testing.harness import COMPRESSED_HEADROOM, LocalStack  # noqa: E402
from throttle.status import DimensionStatus, GroupStatus, read_status  # noqa: E402

PROVIDER = "emu"
MODEL = "m"
GROUP = "emu:m"
POOL = "default"
POOL_LABEL = "org-emulator/default"
PROMPT = [{"role": "user", "content": "Classify this sentence, please."}]
MAX_TOKENS = 10
TTFT_MS = 20.0
#: Worker threads in all, spread over the worker processes (at least 4 each).
THREADS = 32
#: Limits per second, not per minute: a margin of a few requests (testing.harness).
HEADROOM = COMPRESSED_HEADROOM
HERD = 64
#: How long after its arrival the emulator answers a herd request with its 429.
HERD_DELAY_S = 2.0
#: Backlog: this many times what the emulator's highest limit takes in the run.
BACKLOG_FACTOR = 1.5


@dataclass(frozen=True)
class Options:
    windows: int = 20
    window_s: float = 1.0
    #: Group options (``aimd``, ``cold_start``...) and ``[worker]`` options of the runs.
    group: Mapping[str, Any] = field(default_factory=dict)
    worker: Mapping[str, Any] = field(default_factory=dict)

    def per_window(self, amount: float) -> str:
        """A limit spec of ``amount`` per window."""
        return f"{amount:g}/{self.window_s:g}s"


@dataclass(frozen=True)
class Setup:
    """One run: the emulator's profile and true limit (requests per window), the group's
    requests spec, and limit changes ``(after window, new limit)``."""

    profile: Profile
    true_limit: float
    ceiling: str
    changes: tuple[tuple[int, float], ...] = ()
    faults: tuple[FaultConfig, ...] = ()


@dataclass(frozen=True)
class Window:
    """One window, from the emulator's counters and the group's state in Redis."""

    elapsed_s: float
    admitted: float
    refused: int
    limit: float
    multiplier: float
    learned: float | None
    #: Tasks parked in Redis at the window's end, and the requests bucket's level
    #: (negative: the queue of reservations reaches that many requests ahead).
    parked: int = 0
    level: float | None = None

    def utilization(self, window_s: float) -> float:
        return self.admitted / (self.limit * self.elapsed_s / window_s)


@dataclass
class Run:
    scenario: str
    workers: int
    repeat: int
    windows: list[Window] = field(default_factory=list)
    #: The scenario's figures, by name (None: the target never held).
    figures: dict[str, float | None] = field(default_factory=dict)
    passed: bool = False
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def requests(self) -> float:
        return sum(w.admitted + w.refused for w in self.windows)

    @property
    def refused(self) -> int:
        return sum(w.refused for w in self.windows)


@dataclass(frozen=True)
class Context:
    options: Options
    workers: int
    repeat: int


@dataclass(frozen=True)
class Scenario:
    number: int
    target: str
    run: Callable[[Context], Run]


SCENARIOS: dict[str, Scenario] = {}
ScenarioFunction = Callable[[Context], Run]


def scenario(name: str, number: int, target: str) -> Callable[[ScenarioFunction], ScenarioFunction]:
    """Register a scenario function ``(ctx) -> Run`` under ``name``; ``number`` is its
    acceptance point in issue 5, ``target`` what it must show."""

    def register(function: ScenarioFunction) -> ScenarioFunction:
        SCENARIOS[name] = Scenario(number, target, function)
        return function

    return register


# -- the stack ----------------------------------------------------------------------------


def emulator_config(setup: Setup, options: Options) -> EmulatorConfig:
    limits = f"requests={options.per_window(setup.true_limit)},tokens=10M/{options.window_s:g}s"
    return EmulatorConfig(
        profile=setup.profile,
        pools=(PoolConfig(POOL, parse_limits_text(limits)),),
        latency=LatencyConfig(ttft_ms=TTFT_MS),
        faults=setup.faults,
    )


def throttle_doc(setup: Setup, options: Options) -> dict[str, Any]:
    profile = {Profile.OPENAI: "openai", Profile.GEMINI: "gemini"}[setup.profile]
    doc: dict[str, Any] = {
        "providers": {PROVIDER: {"profile": profile, "base_url": "emulator"}},
        "groups": {
            GROUP: {
                "provider": PROVIDER,
                "models": [MODEL],
                "requests": setup.ceiling,
                "tokens": f"10M/{options.window_s:g}s",
                "headroom": HEADROOM,
                **options.group,
            }
        },
    }
    if options.worker:
        doc["worker"] = dict(options.worker)
    return doc


@contextmanager
def local_stack(setup: Setup, ctx: Context, threads: int = THREADS) -> Iterator[LocalStack]:
    stack = LocalStack(emulator_config(setup, ctx.options), throttle_doc(setup, ctx.options))
    try:
        stack.start()
        stack.start_workers(ctx.workers, pool="threads", concurrency=max(4, threads // ctx.workers))
        yield stack
    finally:
        stack.stop()


def consuming(stack: LocalStack, on: bool) -> None:
    """Cancel or add the main queue's consumer on every worker."""
    assert stack.app is not None and stack.config is not None
    control = stack.app.control
    command = control.add_consumer if on else control.cancel_consumer
    command(stack.config.celery.queue, reply=True, timeout=5.0, limit=len(stack.workers))


def enqueue_backlog(stack: LocalStack, count: int) -> list[Any]:
    """Queue ``count`` completions with every consumer cancelled; the caller starts them."""
    consuming(stack, on=False)
    return [
        stack.enqueue(provider=PROVIDER, model=MODEL, messages=PROMPT, max_tokens=MAX_TOKENS)
        for _ in range(count)
    ]


class Observer:
    """The emulator's counters and the group's status in Redis, read together."""

    def __init__(self, stack: LocalStack) -> None:
        assert stack.config is not None
        self.stack = stack
        self.client = redis.Redis.from_url(stack.config.redis.url)

    def status(self) -> tuple[float, GroupStatus]:
        """The Redis server's now (ms) and the group's status."""
        assert self.stack.config is not None
        now_ms, statuses = read_status(self.client, self.stack.config)
        return now_ms, next(s for s in statuses if s.name == GROUP)

    def counters(self) -> tuple[float, float, int]:
        """Emulator time s, admitted requests (cost), 429s so far."""
        stats = self.stack.emulator_stats()
        pool = stats["pools"].get(POOL_LABEL, {})  # there once a request came
        admitted = pool.get("requests", {}).get("admitted_cost", 0.0)
        return float(stats["now_s"]), float(admitted), int(stats["by_status"].get("429", 0))


def requests_dimension(status: GroupStatus) -> DimensionStatus:
    return next(d for d in status.dimensions if d.name == "requests")


def run_windows(ctx: Context, setup: Setup, name: str) -> Run:
    """Saturate the group for ``windows`` windows and read every window's figures."""
    options = ctx.options
    peak = max([setup.true_limit, *(limit for _, limit in setup.changes)])
    backlog = math.ceil(BACKLOG_FACTOR * peak * options.windows) + 50
    run = Run(name, ctx.workers, ctx.repeat)
    with local_stack(setup, ctx) as stack:
        observer = Observer(stack)
        enqueue_backlog(stack, backlog)
        changes = dict(setup.changes)
        limit = setup.true_limit
        before = observer.counters()
        started = time.monotonic()
        consuming(stack, on=True)
        for index in range(options.windows):
            time.sleep(max(0.0, started + (index + 1) * options.window_s - time.monotonic()))
            now = observer.counters()
            _now_ms, status = observer.status()
            run.windows.append(
                Window(
                    elapsed_s=now[0] - before[0],
                    admitted=now[1] - before[1],
                    refused=now[2] - before[2],
                    limit=limit,
                    multiplier=status.multiplier,
                    learned=requests_dimension(status).learned_capacity,
                    parked=status.parked,
                    level=requests_dimension(status).level_units,
                )
            )
            if index + 1 in changes:
                limit = changes[index + 1]
                stack.emulator_post(
                    "/__emu/limits",
                    {"pool": POOL, "limits": {"requests": options.per_window(limit)}},
                )
            before = now
    return run


# -- figures ------------------------------------------------------------------------------


def share(refused: float, requests: float) -> float:
    return refused / requests if requests else 0.0


Test = Callable[[Sequence[Window]], bool]


def windows_until(windows: Sequence[Window], holds: Test) -> int | None:
    """The first k such that ``holds`` for windows[k:] (k counted from the sequence's
    start); None if it never does for a non-empty tail."""
    return next((k for k in range(len(windows)) if holds(windows[k:])), None)


def refused_share(windows: Sequence[Window]) -> float:
    return share(sum(w.refused for w in windows), sum(w.admitted + w.refused for w in windows))


def low_429s(limit: float) -> Test:
    def holds(tail: Sequence[Window]) -> bool:
        return refused_share(tail) <= limit

    return holds


def used(fraction: float, window_s: float) -> Test:
    def holds(tail: Sequence[Window]) -> bool:
        return statistics.fmean(w.utilization(window_s) for w in tail) >= fraction

    return holds


def utilization_from(run: Run, start: int, window_s: float) -> tuple[float, float]:
    """Mean and lowest utilization of windows[start:]."""
    values = [w.utilization(window_s) for w in run.windows[start:]]
    return statistics.fmean(values), min(values)


def change_at(options: Options) -> int:
    return max(3, options.windows // 3)


# -- the scenarios ------------------------------------------------------------------------


@scenario("over-configured", 1, "429s <= 2%, utilization >= 90% from window 2")
def over_configured(ctx: Context) -> Run:
    setup = Setup(Profile.OPENAI, 20, ctx.options.per_window(40))
    run = run_windows(ctx, setup, "over-configured")
    mean, lowest = utilization_from(run, 1, ctx.options.window_s)
    refused = refused_share(run.windows)
    run.figures = {"429_share": refused, "utilization": mean, "utilization_min": lowest}
    run.passed = refused <= 0.02 and mean >= 0.90
    return run


def limit_change(
    ctx: Context, name: str, before: int, after: int, ceiling: int, reached: Test, within: int
) -> Run:
    """The emulator's limit goes from ``before`` to ``after`` requests per window without
    notice; passes when ``reached`` holds from at most ``within`` windows after it."""
    at = change_at(ctx.options)
    setup = Setup(Profile.OPENAI, before, ctx.options.per_window(ceiling), ((at, after),))
    run = run_windows(ctx, setup, name)
    windows = windows_until(run.windows[at:], reached)
    mean, lowest = utilization_from(run, at + within, ctx.options.window_s)
    run.figures = {
        "429_share": refused_share(run.windows),
        "windows": windows,
        "utilization": mean,
        "utilization_min": lowest,
    }
    run.passed = windows is not None and windows <= within
    return run


@scenario("silent-drop", 2, "429s <= 1% again within 2 windows of the drop")
def silent_drop(ctx: Context) -> Run:
    return limit_change(ctx, "silent-drop", 20, 10, 20, low_429s(0.01), 2)


@scenario("silent-rise", 3, "the new capacity used (>= 90%) within 3 windows of the rise")
def silent_rise(ctx: Context) -> Run:
    return limit_change(ctx, "silent-rise", 10, 20, 40, used(0.90, ctx.options.window_s), 3)


def converges_by_aimd(ctx: Context, setup: Setup, name: str) -> Run:
    """No headers: passes with <= 5% 429s overall and <= 2% in every window from the
    fifth on."""
    run = run_windows(ctx, setup, name)
    converged = windows_until(run.windows, low_429s(0.02))
    mean, lowest = utilization_from(run, 1, ctx.options.window_s)
    refused = refused_share(run.windows)
    run.figures = {
        "429_share": refused,
        "windows": converged,
        "utilization": mean,
        "utilization_min": lowest,
    }
    run.passed = refused <= 0.05 and converged is not None and converged <= 5
    return run


@scenario("no-headers", 5, "converged (429s <= 2% from then on) within 5 windows, <= 5% overall")
def no_headers(ctx: Context) -> Run:
    setup = Setup(Profile.GEMINI, 20, ctx.options.per_window(40))
    return converges_by_aimd(ctx, setup, "no-headers")


@scenario("auto-headers", 4, "auto limits: no 429s from window 2, utilization >= 95% from window 2")
def auto_headers(ctx: Context) -> Run:
    """No number configured: ``requests = "auto"`` starts at 1 request/s and the OpenAI
    headers of the first responses teach the true limit."""
    setup = Setup(Profile.OPENAI, 20, f"auto/{ctx.options.window_s:g}s")
    run = run_windows(ctx, setup, "auto-headers")
    mean, lowest = utilization_from(run, 1, ctx.options.window_s)
    late_refused = sum(w.refused for w in run.windows[1:])
    run.figures = {
        "429_share": refused_share(run.windows),
        "utilization": mean,
        "utilization_min": lowest,
    }
    run.passed = late_refused == 0 and mean >= 0.95
    return run


@scenario("auto-no-headers", 5, "auto limits discovered by AIMD: as no-headers, from 1 request/s")
def auto_no_headers(ctx: Context) -> Run:
    """No number configured and no headers (Gemini): slow start from 1 request/s doubles
    the multiplier per clean window until the first 429, then AIMD."""
    setup = Setup(Profile.GEMINI, 20, f"auto/{ctx.options.window_s:g}s")
    return converges_by_aimd(ctx, setup, "auto-no-headers")


@scenario("herd", 6, f"{HERD} 429s in flight at once -> exactly one decrease")
def herd(ctx: Context) -> Run:
    """Gemini profile (no headers, so 429s feed AIMD); ``HERD`` worker threads in all take
    ``HERD`` tasks at once; the emulator refuses the first ``HERD`` requests and answers
    each ``HERD_DELAY_S`` after it arrived, so all are in flight before the first 429
    comes back (a request admitted after the decrease would be a new signal)."""
    fault = FaultConfig(
        FaultKind.RATE_LIMIT,
        max_hits=HERD,
        retry_after_s=ctx.options.window_s,
        delay_ms=HERD_DELAY_S * 1000,
    )
    setup = Setup(Profile.GEMINI, 10_000, ctx.options.per_window(10_000), faults=(fault,))
    run = Run("herd", ctx.workers, ctx.repeat)
    with local_stack(setup, ctx, threads=HERD) as stack:
        observer = Observer(stack)
        results = enqueue_backlog(stack, HERD)
        herd = observe_herd(observer, lambda: consuming(stack, on=True))
        seen = [r.get(timeout=30)["throttle"]["rate_limited"] for r in results]
    lowest = min(herd.multipliers)
    run.windows = [Window(herd.elapsed_s, herd.admitted, herd.refused, 10_000, lowest, None)]
    run.figures = {
        "429_share": share(herd.refused, herd.admitted + herd.refused),
        "decreases": len(herd.decreases),
        "lowest_multiplier": lowest,
    }
    run.notes = {"in_flight_at_first_429": herd.in_flight, "429s_seen_by_tasks": sum(seen)}
    run.passed = len(herd.decreases) == 1 and herd.in_flight == HERD
    return run


@dataclass
class Herd:
    elapsed_s: float = 0.0
    admitted: float = 0.0
    refused: int = 0
    #: 429s the emulator had decided when the first decrease was seen.
    in_flight: int = 0
    #: Server times (ms) of the decreases seen (the state's 'd').
    decreases: set[float] = field(default_factory=set)
    multipliers: list[float] = field(default_factory=list)


def observe_herd(observer: Observer, start: Callable[[], None], timeout_s: float = 60) -> Herd:
    """Poll the group's state every 20 ms from ``start()`` until the emulator admitted
    ``HERD`` requests (every task got through after its 429)."""
    herd = Herd()
    started = time.monotonic()
    start()
    while herd.admitted < HERD and time.monotonic() - started < timeout_s:
        now_ms, status = observer.status()
        _now_s, herd.admitted, herd.refused = observer.counters()
        if status.last_decrease_s_ago is not None:
            if not herd.decreases:
                herd.in_flight = herd.refused
            herd.decreases.add(round(now_ms - 1000 * status.last_decrease_s_ago))
        herd.multipliers.append(status.multiplier)
        time.sleep(0.02)
    herd.elapsed_s = time.monotonic() - started
    return herd


# -- report -------------------------------------------------------------------------------


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def count(value: float | None) -> str:
    return "never" if value is None else f"{value:g}"


def run_line(run: Run) -> str:
    series = " ".join(f"{w.admitted:g}/{w.refused}" for w in run.windows)
    rates = " ".join(f"{w.multiplier:.2f}" for w in run.windows)
    return (
        f"  {run.scenario} workers={run.workers} #{run.repeat}:"
        f" {'PASS' if run.passed else 'FAIL'} {fmt_figures(run.figures)} {run.notes or ''}\n"
        f"    admitted/429s per window: {series}\n    multiplier: {rates}"
    )


def fmt_figures(figures: Mapping[str, float | None]) -> str:
    parts = []
    for name, value in figures.items():
        if name in ("windows", "decreases"):
            parts.append(f"{name}={count(value)}")
        elif name == "lowest_multiplier":
            parts.append(f"{name}={value:.2f}" if value is not None else name)
        else:
            parts.append(f"{name}={pct(value)}")
    return " ".join(parts)


def table(runs: Sequence[Run]) -> str:
    lines = [
        "| # | scenario | workers | requests | 429s | 429 share | utilization (mean, min)"
        " | windows | decreases | target | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        spec = SCENARIOS[run.scenario]
        figures = run.figures
        utilization = (
            f"{pct(figures['utilization'])}, {pct(figures['utilization_min'])}"
            if "utilization" in figures
            else "-"
        )
        windows = count(figures["windows"]) if "windows" in figures else "-"
        decreases = count(figures["decreases"]) if "decreases" in figures else "-"
        lines.append(
            f"| {spec.number} | {run.scenario} | {run.workers} | {run.requests:g} | {run.refused}"
            f" | {pct(figures['429_share'])} | {utilization} | {windows} | {decreases}"
            f" | {spec.target} | {'PASS' if run.passed else '**FAIL**'} |"
        )
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------------------


def settings(pairs: str | None, where: str) -> dict[str, Any]:
    """``a=1,b=2`` as numbers; ``aimd.decrease=0.5`` nests."""
    result: dict[str, Any] = {}
    for pair in filter(None, (pairs or "").split(",")):
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"{where}: expected key=value, got {pair!r}")
        *path, last = key.strip().split(".")
        target = result
        for part in path:
            target = target.setdefault(part, {})
        target[last] = float(value)
    return result


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,4", help="worker process counts, e.g. 1,4")
    parser.add_argument("--windows", type=int, default=20, help="windows per run")
    parser.add_argument("--window-s", type=float, default=1.0, help="seconds per window")
    parser.add_argument("--only", help=f"comma separated, of {', '.join(SCENARIOS)}")
    parser.add_argument("--repeat", type=int, default=1, help="runs per scenario and count")
    parser.add_argument(
        "--group", help="group options, e.g. aimd.decrease=0.5,aimd.increase=0.05,cold_start=0.25"
    )
    parser.add_argument("--worker", help="[worker] options, e.g. pause_jitter_max_s=0.5")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    names = args.only.split(",") if args.only else list(SCENARIOS)
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenarios: {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    options = Options(
        windows=args.windows,
        window_s=args.window_s,
        group=settings(args.group, "--group"),
        worker=settings(args.worker, "--worker"),
    )
    worker_counts = [int(n) for n in args.workers.split(",")]
    started_s = time.monotonic()
    runs: list[Run] = []
    for name in sorted(names, key=lambda n: SCENARIOS[n].number):
        for workers in worker_counts:
            for repeat in range(args.repeat):
                run = SCENARIOS[name].run(Context(options, workers, repeat))
                runs.append(run)
                print(run_line(run), flush=True)
    elapsed_s = time.monotonic() - started_s
    payload = {
        "options": asdict(options),
        "machine": machine(),
        "runs": [asdict(r) for r in runs],
        "elapsed_s": elapsed_s,
    }
    path = write_raw("adaptive", payload)
    print()
    print(
        f"{options.windows} windows of {options.window_s:g} s (production: 60 s);"
        f" options {dict(options.group) or 'default'} {dict(options.worker) or ''}"
    )
    print()
    print(table(runs))
    print(f"\nraw results: {path.relative_to(REPO_ROOT)}; took {elapsed_s:.0f} s")
    return 0 if all(r.passed for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Side-by-side benchmark: our Redis admission against a raw PING and peer rate limiters.

Run by hand, never in CI (``make bench`` builds ``.bench-venv`` with the peers)::

    .bench-venv/bin/python bench/limiter.py                 # about 3-4 minutes
    .bench-venv/bin/python bench/limiter.py --quick         # about 1 minute, for a smoke test
    .bench-venv/bin/python bench/limiter.py --redis-url redis://127.0.0.1:6379/15

Method (see ../shared/reference/perf-baselines.md): the 2-vCPU VMs we run on change speed
by 2-4x within minutes, so contiguous runs cannot be compared. Every subject therefore
runs one *block* per round, in an order rotated each round, and each block is compared
with the PING floor's block of the same round and mode. We report the median over
rounds of those same-round ratios; absolute ops/s are only an order of magnitude.

Modes: ``seq`` (one thread), ``thr8`` (8 threads sharing one limiter object and pool),
``proc4`` (4 spawned processes, each with its own client, started at a barrier).
Latency is ``perf_counter_ns`` around each call; p50/p99 are over every call.

Every limit is non-binding (10,000,000 per minute, burst = limit), so every call takes
the "allowed" path, which writes state. A weighted phase charges cost 1000 per call
(the tokens dimension), where log-based limiters store one entry per unit.

Peers that are not installed are skipped, and the report says so. Keys of each subject
are deleted before each of its blocks (never FLUSHDB, so ``--redis-url`` is safe on a
shared server as long as nothing else uses keys containing ``bmk.``).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import multiprocessing
import os
import platform
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier as ProcessBarrier
from pathlib import Path
from typing import Any

import redis

#: Non-binding capacity of every limit, per minute (burst = capacity).
LIMIT_PER_MIN = 10_000_000
#: Cost per call in the weighted phase (tokens dimension).
WEIGHTED_COST = 1000
THREADS = 8
PROCESSES = 4
WARMUP_CALLS = 200
MODES = ("seq", "thr8", "proc4")
#: Every key a subject writes contains ``bmk.<subject>.k``; see :func:`key_marker`.
MARKER_ROOT = "bmk"
RESULTS_DIR = Path(__file__).resolve().parent / "results"

#: Our 4-dimension group: names and specs. The weighted dimensions take the call's cost.
FOUR_DIMENSIONS: Mapping[str, str] = {
    "requests": f"{LIMIT_PER_MIN}/min",
    "tokens": f"{LIMIT_PER_MIN}/min",
    "input_tokens": f"{LIMIT_PER_MIN}/min",
    "requests_day": f"{LIMIT_PER_MIN * 1440}/day",
}
ONE_DIMENSION: Mapping[str, str] = {"requests": f"{LIMIT_PER_MIN}/min"}
WEIGHTED_DIMENSIONS = frozenset({"tokens", "input_tokens"})

Acquire = Callable[[], bool]


def _do_nothing() -> None:
    return None


# -- subjects ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildContext:
    """What a subject factory gets: where Redis is, its key marker and the call's cost."""

    url: str
    pool: redis.ConnectionPool
    marker: str
    cost: int

    def client(self) -> redis.Redis:
        return redis.Redis(connection_pool=self.pool)


@dataclass(frozen=True)
class Built:
    """A ready subject: ``acquire()`` is one admission; True when admitted now."""

    acquire: Acquire
    close: Callable[[], None] = _do_nothing


@dataclass(frozen=True)
class Subject:
    name: str
    label: str
    build: Callable[[BuildContext], Built]
    #: "floor", "ours" or "peer".
    family: str
    #: Distribution whose version the report shows (None for our own code).
    package: str | None = None
    #: Whether ``cost`` changes what the subject does (False for PING, 1-dim requests).
    takes_cost: bool = True


def key_marker(subject: str) -> str:
    return f"{MARKER_ROOT}.{subject}.k"


def build_ping(ctx: BuildContext) -> Built:
    client = ctx.client()

    def acquire() -> bool:
        return bool(client.ping())

    return Built(acquire)


def build_evalsha_noop(ctx: BuildContext) -> Built:
    """``EVALSHA`` of ``return 1``: the floor of any limiter that is one Lua script."""
    client = ctx.client()
    script = client.register_script("return 1")
    keys = [ctx.marker]

    def acquire() -> bool:
        return bool(script(keys=keys) == 1)

    return Built(acquire)


def build_gcra4_floor(ctx: BuildContext) -> Built:
    """The bare minimum of any atomic four-bucket admission (``bench/floor_gcra4.lua``):
    how close a 4-dimension limiter in one Lua script can get to PING at all."""
    client = ctx.client()
    source = (Path(__file__).parent / "floor_gcra4.lua").read_text(encoding="utf-8")
    script = client.register_script(source)
    keys = [ctx.marker]
    emission_us = 60e6 / LIMIT_PER_MIN
    args = [repr(emission_us), repr(60e6), ctx.cost]

    def acquire() -> bool:
        return bool(script(keys=keys, args=args) == 1)

    return Built(acquire)


def _ours(specs: Mapping[str, str], ctx: BuildContext, *, settle: bool = False) -> Built:
    from throttle.keys import KeyBuilder
    from throttle.limiter import RedisLimiter
    from throttle.limits import LimitGroup

    limiter = RedisLimiter(ctx.client(), keys=KeyBuilder(ctx.marker))
    group = LimitGroup.from_specs("bench", specs)
    costs = {name: float(ctx.cost if name in WEIGHTED_DIMENSIONS else 1) for name in specs}

    def acquire() -> bool:
        admission = limiter.admit(group, costs)
        if settle:  # the request's whole life in Redis: used exactly what it reserved
            limiter.settle(group, admission.reservation)
        return admission.reserved and admission.wait_s == 0

    return Built(acquire)


def build_ours_1d(ctx: BuildContext) -> Built:
    return _ours(ONE_DIMENSION, ctx)


def build_ours_4d(ctx: BuildContext) -> Built:
    return _ours(FOUR_DIMENSIONS, ctx)


def build_ours_4d_cycle(ctx: BuildContext) -> Built:
    """Admit and settle: what one request costs Redis in all (not a target subject)."""
    return _ours(FOUR_DIMENSIONS, ctx, settle=True)


def _throttled(algorithm: str, ctx: BuildContext) -> Built:
    from throttled import RedisStore, Throttled, per_min

    limiter = Throttled(
        key="k",
        using=algorithm,
        quota=per_min(LIMIT_PER_MIN, burst=LIMIT_PER_MIN),
        store=RedisStore(server=ctx.url),
        key_prefix=ctx.marker,
    )
    cost = ctx.cost

    def acquire() -> bool:
        return not limiter.limit(cost=cost).limited

    return Built(acquire)


def build_throttled_token_bucket(ctx: BuildContext) -> Built:
    return _throttled("token_bucket", ctx)


def build_throttled_gcra(ctx: BuildContext) -> Built:
    return _throttled("gcra", ctx)


def _limits(strategy_name: str, ctx: BuildContext) -> Built:
    from limits import RateLimitItemPerMinute, strategies
    from limits.storage import RedisStorage

    storage = RedisStorage(ctx.url, connection_pool=ctx.pool)
    strategy = getattr(strategies, strategy_name)(storage)
    item = RateLimitItemPerMinute(LIMIT_PER_MIN)
    identifier, cost = ctx.marker, ctx.cost

    def acquire() -> bool:
        return bool(strategy.hit(item, identifier, cost=cost))

    return Built(acquire)


def build_limits_moving_window(ctx: BuildContext) -> Built:
    return _limits("MovingWindowRateLimiter", ctx)


def build_limits_sliding_counter(ctx: BuildContext) -> Built:
    return _limits("SlidingWindowCounterRateLimiter", ctx)


def _pyrate(limiter: Any, cost: int) -> Built:
    def acquire() -> bool:
        return bool(limiter.try_acquire("k", weight=cost))  # blocking=True, its default

    return Built(acquire, limiter.close)


def build_pyrate_sliding_log(ctx: BuildContext) -> Built:
    from pyrate_limiter import Duration, Limiter, Rate, RedisBucket

    bucket = RedisBucket.init([Rate(LIMIT_PER_MIN, Duration.MINUTE)], ctx.client(), ctx.marker)
    return _pyrate(Limiter(bucket), ctx.cost)


def build_pyrate_token_bucket(ctx: BuildContext) -> Built:
    from pyrate_limiter import Duration, Limiter, Rate, RedisStateStore, StateBucket, TokenBucket

    store = RedisStateStore(ctx.client(), ctx.marker)
    bucket = StateBucket([Rate(LIMIT_PER_MIN, Duration.MINUTE)], TokenBucket(), store)
    return _pyrate(Limiter(bucket), ctx.cost)


SUBJECTS: tuple[Subject, ...] = (
    Subject("ping", "redis-py PING (floor)", build_ping, "floor", takes_cost=False),
    Subject(
        "noop_lua",
        "EVALSHA `return 1` (script floor)",
        build_evalsha_noop,
        "floor",
        takes_cost=False,
    ),
    Subject(
        "gcra4_floor",
        "bare 4-bucket GCRA script (4-dim floor)",
        build_gcra4_floor,
        "floor",
    ),
    Subject("ours_1d", "**ours, 1 dimension**", build_ours_1d, "ours", takes_cost=False),
    Subject("ours_4d", "**ours, 4 dimensions**", build_ours_4d, "ours"),
    Subject(
        "ours_4d_cycle",
        "ours, 4 dimensions, admit + settle",
        build_ours_4d_cycle,
        "ours",
        takes_cost=False,
    ),
    Subject(
        "thr_tb", "throttled-py token bucket", build_throttled_token_bucket, "peer", "throttled-py"
    ),
    Subject("thr_gcra", "throttled-py GCRA", build_throttled_gcra, "peer", "throttled-py"),
    Subject("lim_mw", "limits MovingWindow", build_limits_moving_window, "peer", "limits"),
    Subject(
        "lim_swc", "limits SlidingWindowCounter", build_limits_sliding_counter, "peer", "limits"
    ),
    Subject(
        "pyr_log",
        "pyrate RedisBucket (zset log)",
        build_pyrate_sliding_log,
        "peer",
        "pyrate-limiter",
    ),
    Subject(
        "pyr_tb",
        "pyrate StateBucket TokenBucket",
        build_pyrate_token_bucket,
        "peer",
        "pyrate-limiter",
    ),
)
SUBJECTS_BY_NAME: Mapping[str, Subject] = {s.name: s for s in SUBJECTS}


def build_subject(name: str, url: str, pool: redis.ConnectionPool, cost: int) -> Built:
    subject = SUBJECTS_BY_NAME[name]
    built = subject.build(BuildContext(url, pool, key_marker(name), cost))
    for _ in range(WARMUP_CALLS):
        built.acquire()
    return built


# -- timing -----------------------------------------------------------------------------


@dataclass
class Timing:
    """One stretch of calls: wall-clock bounds (perf_counter_ns) and per-call latencies."""

    start_ns: int
    end_ns: int
    latencies_ns: list[int]
    denied: int


def time_calls(acquire: Acquire, calls: int) -> Timing:
    clock = time.perf_counter_ns
    latencies = [0] * calls
    denied = 0
    start_ns = clock()
    for i in range(calls):
        before = clock()
        admitted = acquire()
        latencies[i] = clock() - before
        if not admitted:
            denied += 1
    return Timing(start_ns, clock(), latencies, denied)


def merge_timings(parts: Sequence[Timing]) -> Timing:
    """Calls run in parallel: wall time from the first start to the last end."""
    latencies = [lat for part in parts for lat in part.latencies_ns]
    return Timing(
        start_ns=min(p.start_ns for p in parts),
        end_ns=max(p.end_ns for p in parts),
        latencies_ns=latencies,
        denied=sum(p.denied for p in parts),
    )


def split_calls(total: int, workers: int) -> list[int]:
    base, extra = divmod(total, workers)
    return [base + (1 if i < extra else 0) for i in range(workers)]


def run_threads(acquire: Acquire, total_calls: int, threads: int = THREADS) -> Timing:
    """``threads`` threads share one subject object; all start at a barrier."""
    barrier = threading.Barrier(threads)
    parts: list[Timing | None] = [None] * threads
    errors: list[BaseException] = []

    def work(index: int, calls: int) -> None:
        try:
            barrier.wait()
            parts[index] = time_calls(acquire, calls)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    workers = [
        threading.Thread(target=work, args=(i, n), daemon=True)
        for i, n in enumerate(split_calls(total_calls, threads))
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise RuntimeError(f"a benchmark thread failed: {errors[0]!r}") from errors[0]
    return merge_timings([p for p in parts if p is not None])


def _process_worker(conn: Connection, barrier: ProcessBarrier, url: str) -> None:
    """Child of :class:`ProcessFleet`: builds subjects on demand, runs blocks on command."""
    pool = redis.ConnectionPool.from_url(url)
    built: dict[tuple[str, int], Built] = {}
    while True:
        command = conn.recv()
        if command is None:
            break
        name, calls, cost = command
        try:
            if (name, cost) not in built:
                built[(name, cost)] = build_subject(name, url, pool, cost)
            barrier.wait(timeout=120)
            conn.send(("ok", time_calls(built[(name, cost)].acquire, calls)))
        except Exception:
            barrier.abort()
            conn.send(("error", traceback.format_exc()))
    for subject in built.values():
        subject.close()
    pool.disconnect()


class ProcessFleet:
    """``processes`` spawned workers, each with its own client, kept for the whole run."""

    def __init__(self, url: str, processes: int = PROCESSES) -> None:
        context = multiprocessing.get_context("spawn")
        self._barrier = context.Barrier(processes)
        self._conns: list[Connection] = []
        self._procs: list[multiprocessing.process.BaseProcess] = []
        for _ in range(processes):
            parent_end, child_end = context.Pipe()
            proc = context.Process(
                target=_process_worker, args=(child_end, self._barrier, url), daemon=True
            )
            proc.start()
            self._conns.append(parent_end)
            self._procs.append(proc)

    def run(self, subject: str, total_calls: int, cost: int) -> Timing:
        for conn, calls in zip(
            self._conns, split_calls(total_calls, len(self._conns)), strict=True
        ):
            conn.send((subject, calls, cost))
        replies = [conn.recv() for conn in self._conns]
        self._barrier.reset()
        failures = [detail for status, detail in replies if status != "ok"]
        if failures:
            raise RuntimeError(f"a benchmark process failed:\n{failures[0]}")
        return merge_timings([detail for _status, detail in replies])

    def close(self) -> None:
        for conn in self._conns:
            conn.send(None)
        for proc in self._procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()


# -- Redis key hygiene and memory -------------------------------------------------------


def delete_subject_keys(client: redis.Redis, subject: str) -> None:
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"*{key_marker(subject)}*", count=10_000):
        batch.append(key)
        if len(batch) >= 1000:
            client.unlink(*batch)
            batch.clear()
    if batch:
        client.unlink(*batch)


#: Top-level commands the subjects send; a script's own commands are inside its time.
SERVER_TIMED_COMMANDS = ("cmdstat_eval", "cmdstat_evalsha", "cmdstat_ping")


def reset_command_stats(client: redis.Redis) -> bool:
    try:
        client.config_resetstat()
    except redis.ResponseError:
        return False
    return True


def server_usec(client: redis.Redis) -> float:
    stats: dict[str, dict[str, Any]] = client.info("commandstats")  # type: ignore[assignment]
    return float(sum(stats.get(name, {}).get("usec", 0) for name in SERVER_TIMED_COMMANDS))


@dataclass
class Memory:
    """Bytes held by a subject's keys (MEMORY USAGE ... SAMPLES 0, i.e. exact)."""

    keys: int = 0
    bytes: int = 0
    #: Our finished-reservation markers (written by settle/cancel, none by admission).
    marker_keys: int = 0
    marker_bytes: int = 0


def measure_memory(client: redis.Redis, subject: str) -> Memory:
    keys = list(client.scan_iter(match=f"*{key_marker(subject)}*", count=10_000))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.execute_command("MEMORY", "USAGE", key, "SAMPLES", "0")  # type: ignore[no-untyped-call]
    sizes = pipe.execute() if keys else []
    memory = Memory()
    for key, size in zip(keys, sizes, strict=True):
        if b":done:" in key:
            memory.marker_keys += 1
            memory.marker_bytes += int(size or 0)
        else:
            memory.keys += 1
            memory.bytes += int(size or 0)
    return memory


# -- rounds -----------------------------------------------------------------------------


@dataclass
class Block:
    """One subject's block in one round: the unit every ratio is computed from."""

    phase: str
    round: int
    mode: str
    subject: str
    cost: int
    calls: int
    denied: int
    wall_s: float
    ops_per_s: float
    p50_us: float
    p99_us: float
    #: Server time per call inside EVAL/EVALSHA (with the commands a script runs) or PING,
    #: from INFO commandstats; None when CONFIG RESETSTAT is not allowed.
    server_us: float | None = None
    memory: Memory | None = None
    latencies_ns: list[int] = field(default_factory=list, repr=False)


def percentile(sorted_values: Sequence[int], fraction: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def make_block(phase: str, round_no: int, mode: str, subject: str, cost: int, t: Timing) -> Block:
    wall_s = (t.end_ns - t.start_ns) / 1e9
    ordered = sorted(t.latencies_ns)
    return Block(
        phase=phase,
        round=round_no,
        mode=mode,
        subject=subject,
        cost=cost,
        calls=len(t.latencies_ns),
        denied=t.denied,
        wall_s=wall_s,
        ops_per_s=len(t.latencies_ns) / wall_s,
        p50_us=percentile(ordered, 0.50) / 1000,
        p99_us=percentile(ordered, 0.99) / 1000,
        latencies_ns=t.latencies_ns,
    )


def rotated(items: Sequence[Any], by: int) -> list[Any]:
    shift = by % len(items) if items else 0
    return [*items[shift:], *items[:shift]]


class Bench:
    """Holds the clients, the built subjects and the process fleet for one run."""

    def __init__(self, url: str, calls_per_block: int, use_processes: bool) -> None:
        self.url = url
        self.calls_per_block = calls_per_block
        self.pool = redis.ConnectionPool.from_url(url)
        self.admin = redis.Redis.from_url(url)
        self._built: dict[tuple[str, int], Built] = {}
        self.fleet = ProcessFleet(url) if use_processes else None

    def subject(self, name: str, cost: int) -> Built:
        if (name, cost) not in self._built:
            self._built[(name, cost)] = build_subject(name, self.url, self.pool, cost)
        return self._built[(name, cost)]

    def run_block(
        self, phase: str, round_no: int, mode: str, name: str, cost: int, calls: int
    ) -> Block:
        delete_subject_keys(self.admin, name)
        stats_reset = reset_command_stats(self.admin)
        if mode == "proc4":
            assert self.fleet is not None
            timing = self.fleet.run(name, calls, cost)
        else:
            acquire = self.subject(name, cost).acquire
            timing = time_calls(acquire, calls) if mode == "seq" else run_threads(acquire, calls)
        block = make_block(phase, round_no, mode, name, cost, timing)
        if stats_reset:
            block.server_us = server_usec(self.admin) / block.calls
        if mode == "seq":
            block.memory = measure_memory(self.admin, name)
        return block

    def close(self) -> None:
        if self.fleet is not None:
            self.fleet.close()
        for built in self._built.values():
            built.close()
        wait_for_peer_threads()  # before the pool goes: a leaker may still be using it
        self.pool.disconnect()
        self.admin.close()


def run_main_phase(
    bench: Bench, names: Sequence[str], modes: Sequence[str], rounds: int
) -> list[Block]:
    blocks: list[Block] = []
    for round_no in range(rounds):
        for mode in rotated(modes, round_no):
            for name in rotated(names, round_no):
                block = bench.run_block("main", round_no, mode, name, 1, bench.calls_per_block)
                blocks.append(block)
            print(f"  round {round_no + 1}/{rounds} {mode:5} done", file=sys.stderr, flush=True)
    return blocks


def weighted_variants(names: Sequence[str]) -> list[tuple[str, int]]:
    """(subject, cost) pairs of the weighted phase: ours at 1 and 1000, peers at 1000."""
    variants: list[tuple[str, int]] = []
    for name in names:
        subject = SUBJECTS_BY_NAME[name]
        if name == "ping":
            variants.append((name, 1))
        elif name == "ours_4d":
            variants += [(name, 1), (name, WEIGHTED_COST)]
        elif subject.takes_cost:
            variants.append((name, WEIGHTED_COST))
    return variants


def run_weighted_phase(bench: Bench, names: Sequence[str], rounds: int, calls: int) -> list[Block]:
    blocks: list[Block] = []
    variants = weighted_variants(names)
    for round_no in range(rounds):
        for name, cost in rotated(variants, round_no):
            blocks.append(bench.run_block("weighted", round_no, "seq", name, cost, calls))
        print(f"  weighted round {round_no + 1}/{rounds} done", file=sys.stderr, flush=True)
    return blocks


# -- summary ----------------------------------------------------------------------------


@dataclass
class Row:
    """Medians over rounds for one (phase, mode, subject, cost)."""

    subject: str
    mode: str
    cost: int
    rounds: int
    ops_per_s: float
    #: p50/p99 over every call of every round.
    p50_us: float
    p99_us: float
    #: Median over rounds of (ops/s ÷ the PING block's ops/s in the same round and mode).
    x_ping: float
    #: Median over rounds of the server's time per call (see Block.server_us).
    server_us: float
    denied: int
    memory: Memory | None


def index_blocks(blocks: Iterable[Block]) -> dict[tuple[str, int, str, int], Block]:
    """(mode, round, subject, cost) -> block."""
    return {(b.mode, b.round, b.subject, b.cost): b for b in blocks}


def same_round_ratios(
    blocks: Sequence[Block], mode: str, top: tuple[str, int], bottom: tuple[str, int]
) -> list[float]:
    """Per round: ops/s of ``top`` ÷ ops/s of ``bottom``, both (subject, cost)."""
    by_key = index_blocks(blocks)
    ratios = []
    for round_no in sorted({b.round for b in blocks}):
        a = by_key.get((mode, round_no, *top))
        b = by_key.get((mode, round_no, *bottom))
        if a is not None and b is not None:
            ratios.append(a.ops_per_s / b.ops_per_s)
    return ratios


def median_or_nan(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def summarize(blocks: Sequence[Block]) -> list[Row]:
    rows = []
    order = [s.name for s in SUBJECTS]
    groups = sorted(
        {(b.mode, b.subject, b.cost) for b in blocks}, key=lambda g: (order.index(g[1]), g[2])
    )
    for mode, subject, cost in groups:
        mine = [b for b in blocks if (b.mode, b.subject, b.cost) == (mode, subject, cost)]
        pooled = sorted(lat for b in mine for lat in b.latencies_ns)
        memories = [b.memory for b in mine if b.memory is not None]
        server = [b.server_us for b in mine if b.server_us is not None]
        rows.append(
            Row(
                subject=subject,
                mode=mode,
                cost=cost,
                rounds=len(mine),
                ops_per_s=statistics.median(b.ops_per_s for b in mine),
                p50_us=percentile(pooled, 0.50) / 1000,
                p99_us=percentile(pooled, 0.99) / 1000,
                x_ping=median_or_nan(same_round_ratios(blocks, mode, (subject, cost), ("ping", 1))),
                server_us=median_or_nan(server),
                denied=sum(b.denied for b in mine),
                memory=memories[-1] if memories else None,
            )
        )
    return rows


@dataclass
class Verdict:
    target: str
    mode: str
    value: float
    threshold: float
    spread: tuple[float, float]
    passed: bool


def verdict(target: str, mode: str, ratios: Sequence[float], threshold: float) -> Verdict:
    value = median_or_nan(ratios)
    spread = (min(ratios), max(ratios)) if ratios else (math.nan, math.nan)
    return Verdict(target, mode, value, threshold, spread, value >= threshold)


def evaluate_targets(
    main: Sequence[Block], weighted: Sequence[Block], names: Sequence[str], tolerance: float
) -> list[Verdict]:
    """The issue's targets, each on same-round ratios (median over rounds)."""
    verdicts = []
    if "ours_4d" in names:
        floor = same_round_ratios(main, "seq", ("ours_4d", 1), ("ping", 1))
        verdicts.append(verdict("4-dim ÷ PING floor ≥ 0.75", "seq", floor, 0.75))
    peers = [n for n in names if SUBJECTS_BY_NAME[n].family == "peer"]
    for mode in sorted({b.mode for b in main}, key=MODES.index):
        for peer in peers:
            ratios = same_round_ratios(main, mode, ("ours_4d", 1), (peer, 1))
            label = f"4-dim ÷ {SUBJECTS_BY_NAME[peer].label} ≥ 1"
            verdicts.append(verdict(label, mode, ratios, 1.0 - tolerance))
    if weighted:
        ratios = same_round_ratios(weighted, "seq", ("ours_4d", WEIGHTED_COST), ("ours_4d", 1))
        label = f"4-dim cost {WEIGHTED_COST} ÷ 4-dim cost 1 ≥ 1"
        verdicts.append(verdict(label, "seq", ratios, 1.0 - tolerance))
    return verdicts


# -- report -----------------------------------------------------------------------------


def fmt_int(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:,.0f}"


def fmt_us(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.1f}"


def fmt_ratio(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.2f}"


def fmt_bytes(count: int) -> str:
    if count >= 1 << 20:
        return f"{count / (1 << 20):.1f} MiB"
    if count >= 1 << 10:
        return f"{count / (1 << 10):.1f} KiB"
    return f"{count} B"


def main_table(rows: Sequence[Row], names: Sequence[str], modes: Sequence[str]) -> str:
    by_key = {(r.mode, r.subject): r for r in rows}
    header = ["subject"]
    for mode in modes:
        header += [f"{mode} ops/s", f"{mode} p50 µs", f"{mode} p99 µs", f"{mode} ×ping"]
    header += ["seq server µs/call", "bytes held after a seq block"]
    lines = [_md_row(header), _md_row(["---"] + ["---:"] * (len(header) - 1))]
    for name in names:
        cells = [SUBJECTS_BY_NAME[name].label]
        for mode in modes:
            row = by_key.get((mode, name))
            cells += _timing_cells(row) if row else ["–"] * 4
        seq = by_key.get(("seq", name))
        cells.append(fmt_us(seq.server_us) if seq else "–")
        cells.append(describe_memory(seq.memory if seq else None))
        lines.append(_md_row(cells))
    return "\n".join(lines)


def _timing_cells(row: Row) -> list[str]:
    return [fmt_int(row.ops_per_s), fmt_int(row.p50_us), fmt_int(row.p99_us), fmt_ratio(row.x_ping)]


def weighted_table(rows: Sequence[Row]) -> str:
    header = ["subject", "cost", "ops/s", "p50 µs", "p99 µs", "×ping", "server µs/call"]
    header.append("bytes held after a block")
    lines = [_md_row(header), _md_row(["---", *["---:"] * (len(header) - 1)])]
    for row in rows:
        if row.subject == "ping":
            continue
        label = SUBJECTS_BY_NAME[row.subject].label
        cells = [label, str(row.cost), *_timing_cells(row), fmt_us(row.server_us)]
        cells.append(describe_memory(row.memory))
        lines.append(_md_row(cells))
    return "\n".join(lines)


def describe_memory(memory: Memory | None) -> str:
    if memory is None:
        return "–"
    text = f"{fmt_bytes(memory.bytes)} ({memory.keys} keys)"
    if memory.marker_keys:
        text += f" + {fmt_bytes(memory.marker_bytes)} in {memory.marker_keys} finished markers"
    return text


def targets_table(verdicts: Sequence[Verdict]) -> str:
    header = ["target", "mode", "median ratio", "min–max over rounds", "threshold", "result"]
    lines = [_md_row(header), _md_row(["---", "---", "---:", "---:", "---:", "---"])]
    for v in verdicts:
        spread = f"{fmt_ratio(v.spread[0])}–{fmt_ratio(v.spread[1])}"
        result = "**PASS**" if v.passed else "**FAIL**"
        cells = [v.target, v.mode, fmt_ratio(v.value), spread, f"{v.threshold:.2f}", result]
        lines.append(_md_row(cells))
    return "\n".join(lines)


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def environment(admin: redis.Redis) -> dict[str, Any]:
    info: dict[str, Any] = admin.info("server")  # type: ignore[assignment]
    versions: dict[str, str | None] = {}
    for package in ("redis", "hiredis", "throttled-py", "limits", "pyrate-limiter"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    from redis.utils import HIREDIS_AVAILABLE

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "redis_server": info.get("redis_version"),
        "hiredis_parser_active": bool(HIREDIS_AVAILABLE),
        "packages": versions,
    }


def probe_subjects(url: str, pool: redis.ConnectionPool, wanted: Sequence[str]) -> dict[str, str]:
    """Build each subject once; returns the ones that cannot run, with the reason."""
    skipped = {}
    for name in wanted:
        try:
            built = SUBJECTS_BY_NAME[name].build(BuildContext(url, pool, key_marker(name), 1))
            built.acquire()
            built.close()
        except ImportError as exc:
            skipped[name] = f"not installed ({exc.name or exc})"
        except Exception as exc:
            skipped[name] = f"failed to start: {exc!r}"
    return skipped


# -- command line -----------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    redis_url: str | None
    rounds: int
    calls_per_block: int
    weighted_calls: int
    modes: tuple[str, ...]
    subjects: tuple[str, ...]
    tolerance: float
    output: Path | None


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", help="use this server instead of a private one")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 8, quick 3)")
    parser.add_argument(
        "--calls-per-block",
        type=int,
        help="calls per block, in total over threads/processes (default 2500, quick 600)",
    )
    parser.add_argument(
        "--weighted-calls", type=int, help="calls per weighted block (default 500, quick 200)"
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--modes", default=",".join(MODES), help="comma list of seq,thr8,proc4")
    parser.add_argument("--subjects", default=",".join(s.name for s in SUBJECTS))
    parser.add_argument(
        "--tolerance",
        type=float,
        default=0.03,
        help="'no slower' passes at a median ratio >= 1 - tolerance (noise); default 0.03",
    )
    parser.add_argument("--output", type=Path, help="raw JSON path (default bench/results/)")
    args = parser.parse_args(argv)
    modes = tuple(m for m in args.modes.split(",") if m)
    subjects = tuple(s for s in args.subjects.split(",") if s)
    unknown = [m for m in modes if m not in MODES] + [
        s for s in subjects if s not in SUBJECTS_BY_NAME
    ]
    if unknown:
        parser.error(f"unknown mode or subject: {', '.join(unknown)}")
    if "ping" not in subjects:
        subjects = ("ping", *subjects)
    return Options(
        redis_url=args.redis_url,
        rounds=args.rounds or (3 if args.quick else 8),
        calls_per_block=args.calls_per_block or (600 if args.quick else 2500),
        weighted_calls=args.weighted_calls or (200 if args.quick else 500),
        modes=modes,
        subjects=subjects,
        tolerance=args.tolerance,
        output=args.output,
    )


def run(options: Options, url: str) -> dict[str, Any]:
    bench = Bench(url, options.calls_per_block, use_processes="proc4" in options.modes)
    started = time.time()
    try:
        env = environment(bench.admin)
        skipped = probe_subjects(url, bench.pool, options.subjects)
        names = [n for n in options.subjects if n not in skipped]
        for name, reason in skipped.items():
            print(f"skipping {SUBJECTS_BY_NAME[name].label}: {reason}", file=sys.stderr)
        main = run_main_phase(bench, names, options.modes, options.rounds)
        weighted = run_weighted_phase(bench, names, options.rounds, options.weighted_calls)
    finally:
        bench.close()
    return {
        "started_unix_s": started,
        "duration_s": time.time() - started,
        "environment": env,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
        "skipped": skipped,
        "subjects": names,
        "main": main,
        "weighted": weighted,
    }


def environment_line(env: Mapping[str, Any], skipped: Mapping[str, str]) -> str:
    parser = "on" if env["hiredis_parser_active"] else "off"
    packages = ", ".join(
        f"{name} {version}" for name, version in env["packages"].items() if version
    )
    text = (
        f"Environment: Python {env['python']}, redis-server {env['redis_server']}, "
        f"{env['cpus']} CPUs, hiredis parser {parser}, {packages}."
    )
    if skipped:
        text += " Skipped: " + "; ".join(f"{name}: {why}" for name, why in skipped.items()) + "."
    return text


def wait_for_peer_threads(timeout_s: float = 12.0) -> None:
    """pyrate-limiter's leaker thread wakes every 10 s; let it see its stop flag before
    the private redis-server goes away (else it prints a ConnectionError at exit)."""
    for thread in threading.enumerate():
        if "Leaker" in thread.name and thread is not threading.current_thread():
            thread.join(timeout_s)


def report(result: dict[str, Any], options: Options) -> tuple[str, dict[str, Any]]:
    names: list[str] = result["subjects"]
    main: list[Block] = result["main"]
    weighted: list[Block] = result["weighted"]
    main_rows, weighted_rows = summarize(main), summarize(weighted)
    verdicts = evaluate_targets(main, weighted, names, options.tolerance)
    env = result["environment"]
    text = "\n\n".join(
        [
            f"### Throughput and latency ({options.rounds} interleaved rounds, "
            f"{options.calls_per_block} calls per block; ×ping = median of same-round ratios)",
            main_table(main_rows, names, options.modes),
            f"### Weighted admission (cost {WEIGHTED_COST} per call, seq, "
            f"{options.weighted_calls} calls per block; bytes held after one block)",
            weighted_table(weighted_rows),
            f"### Targets ('no slower' passes at ≥ {1 - options.tolerance:.2f}: "
            f"±{options.tolerance:.0%} is run-to-run noise)",
            targets_table(verdicts),
            environment_line(env, result["skipped"]),
        ]
    )
    denied = sum(b.denied for b in [*main, *weighted])
    if denied:
        text += f"\n\nWARNING: {denied} calls were denied; every limit should be non-binding."
    raw = {
        **{k: v for k, v in result.items() if k not in ("main", "weighted")},
        "blocks": [_block_json(b) for b in [*main, *weighted]],
        "summary": {
            "main": [asdict(r) for r in main_rows],
            "weighted": [asdict(r) for r in weighted_rows],
        },
        "targets": [asdict(v) for v in verdicts],
        "markdown": text,
    }
    return text, raw


def _block_json(block: Block) -> dict[str, Any]:
    data = asdict(block)
    data.pop("latencies_ns")
    return data


def write_raw(raw: dict[str, Any], output: Path | None) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(raw["started_unix_s"]))
    path = output or RESULTS_DIR / f"limiter-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_finite(raw), indent=1, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def _finite(value: Any) -> Any:
    """The same structure with NaN replaced by None, so the file is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    if options.redis_url:
        result = run(options, options.redis_url)
    else:
        from testing.redis_server import EmbeddedRedis

        with EmbeddedRedis() as server:
            result = run(options, server.url)
    text, raw = report(result, options)
    print(text)
    print(f"\nraw results: {write_raw(raw, options.output)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

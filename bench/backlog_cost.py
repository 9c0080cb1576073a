"""What one completion costs when it waits in a deep backlog, against one that runs at
once (issue 11, acceptance 4). Run by hand, never in CI::

    .venv/bin/python bench/backlog_cost.py              # about 3 minutes
    .venv/bin/python bench/backlog_cost.py --rounds 6
    .venv/bin/python bench/backlog_cost.py --rounds 1 --scripts  # µs per Lua script

One stack (embedded redis-server for broker, results and limiter; the emulator with
zero latency and limits that never bind; one worker ``-P threads -c 8``). Two groups:

* ``immediate`` (``emu:free``): limits that never bind; every completion runs at once;
* ``paced`` (``emu:free``): the same, sent at ``--rate`` per second: every completion
  runs at once, at the backlog's pace. Work spread over time costs the server more per
  call than the same work in a burst (its caches go cold between calls; seen here: a
  settle, the same script on both paths, took 25% more µs at 60/s than in a burst), so
  this control isolates what the backlog itself costs;
* ``backlogged`` (``emu:narrow``, ``--rate`` requests/s): a backlog of ``--prime``
  completions is built first and left to settle (the group's fair queue holds work,
  the broker queue is empty); then ``--tasks`` more are sent. They join the fair queue
  at send, as a web app's sends do behind a deep backlog.

A measure spans from just before the sends to the last completion. The worker's CPU
(``/proc``), Redis's CPU (``INFO cpu``) and commands (``INFO stats``) are divided by the
completions the emulator admitted in it; the producer's CPU (this process) over its
sends, by the tasks sent. The subjects alternate within each round (A B C, then C B A);
ratios are taken per round, as the machine's speed drifts 2-4x within minutes.

Markdown goes to stdout; raw JSON to ``bench/results/backlog_cost-<time>.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis

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
from testing.harness import LocalStack  # noqa: E402
from throttle.keys import KeyBuilder  # noqa: E402
from throttle.limiter import RedisLimiter  # noqa: E402

PROMPT = [{"role": "user", "content": "Say hello."}]
HUGE = "requests=100000/s,tokens=100000000/s"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sample:
    worker_cpu_s: float
    producer_cpu_s: float
    redis_cpu_s: float
    redis_commands: int
    admitted: int
    #: Calls per Redis command name.
    by_command: dict[str, int]
    #: Server µs per Redis command name (a script's own commands count in its EVALSHA too).
    usec_by_command: dict[str, int]


@dataclass(frozen=True)
class Measure:
    subject: str
    round: int
    completions: int
    seconds: float
    worker_cpu_ms: float
    producer_cpu_ms: float
    redis_cpu_ms: float
    redis_commands: float
    #: Calls per completion of each Redis command, most first.
    by_command: dict[str, float]
    #: Server µs per completion of each Redis command, most first.
    usec_by_command: dict[str, float]
    #: With --scripts: per script, (calls, server µs) per completion (from the SLOWLOG).
    by_script: dict[str, tuple[float, float]] | None = None


def process_cpu_s(pid: int) -> float:
    """utime + stime of a process and its reaped children, in s."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / CLOCK_TICKS


def sample(stack: LocalStack, client: redis.Redis) -> Sample:
    cpu = client.info("cpu")
    stats = client.info("stats")
    commands = client.info("commandstats")
    return Sample(
        sum(process_cpu_s(w.pid) for w in stack.workers),
        time.process_time(),
        float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
        int(stats["total_commands_processed"]),
        int(stack.emulator_stats()["admitted"]),
        {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in commands.items()},
        {k.removeprefix("cmdstat_"): int(v["usec"]) for k, v in commands.items()},
    )


def script_names() -> dict[str, str]:
    """The SHA1 of each of the limiter's scripts -> its file's name."""
    import hashlib

    from throttle.scripts import script_source

    names = [p.name for p in (REPO_ROOT / "throttle" / "lua").glob("*.lua")]
    return {hashlib.sha1(script_source(n).encode()).hexdigest(): n for n in names}


def start_script_log(client: redis.Redis) -> None:
    """Log every command with its server time (the SLOWLOG at a threshold of 0)."""
    client.config_set("slowlog-max-len", 1_000_000)
    client.config_set("slowlog-log-slower-than", 0)
    client.slowlog_reset()


def script_costs(client: redis.Redis, n: int) -> dict[str, tuple[float, float]]:
    """Per script: calls and server µs, per completion, since start_script_log."""
    client.config_set("slowlog-log-slower-than", 10_000)
    names = script_names()
    calls: dict[str, list[float]] = {}
    for entry in client.slowlog_get(1_000_000):
        command = entry["command"].split()
        if command and command[0].upper() in (b"EVALSHA", "EVALSHA") and len(command) > 1:
            sha = command[1].decode() if isinstance(command[1], bytes) else command[1]
            name = names.get(sha, sha[:8])
            if name == "schedule.lua":  # a push has 9 more arguments than a pass
                name += " push" if len(command) > 20 else " pass"
            calls.setdefault(name, []).append(entry["duration"])
    client.slowlog_reset()
    return {k: (round(len(v) / n, 2), round(sum(v) / n, 1)) for k, v in sorted(calls.items())}


def stack_for(rate: float, release_lead_s: float | None = None) -> LocalStack:
    emulator = EmulatorConfig(
        pools=(PoolConfig("default", parse_limits_text(HUGE), models=("gpt-4o-mini", "gpt-4o")),),
        latency=LatencyConfig(ttft_ms=0.0),
    )
    groups = {
        "emu:free": {"models": ["gpt-4o-mini"], "requests": "100000/s", "tokens": "100M/s"},
        "emu:narrow": {"models": ["gpt-4o"], "requests": f"{rate:g}/s", "tokens": "100M/s"},
    }
    doc = {
        "providers": {"emu": {"profile": "openai", "base_url": "emulator"}},
        "groups": {name: {"provider": "emu", **spec} for name, spec in groups.items()},
    }
    if release_lead_s is not None:
        doc["worker"] = {"release_lead_s": release_lead_s}
    return LocalStack(emulator, doc)


def send(stack: LocalStack, model: str, count: int) -> list[Any]:
    return [
        stack.enqueue(provider="emu", model=model, messages=PROMPT, max_tokens=16)
        for _ in range(count)
    ]


def wait_done(stack: LocalStack, results: list[Any], admitted: int, timeout_s: float) -> None:
    """Until every result is in. Watched through the emulator's count of admitted calls
    first (a poll of the result backend every 50 ms would add its own load to the Redis
    being measured, and more of it to the subject that takes longer)."""
    deadline = time.monotonic() + timeout_s
    while int(stack.emulator_stats()["admitted"]) - admitted < len(results):
        if time.monotonic() > deadline:
            raise RuntimeError("the provider never saw every call")
        time.sleep(0.05)
    while not all(r.ready() for r in results):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{sum(not r.ready() for r in results)} tasks unfinished")
        time.sleep(0.05)
    failed = [r for r in results if not r.successful()]
    if failed:
        raise RuntimeError(f"{len(failed)} tasks failed, e.g. {failed[0].result!r}")


def settle_backlog(stack: LocalStack, client: redis.Redis, timeout_s: float = 60) -> None:
    """Until the narrow group's fair queue holds work and the broker queue is empty."""
    assert stack.config is not None
    broker = redis.Redis.from_url(stack.config.broker_url)
    queue = stack.config.celery.queue
    state = KeyBuilder().state("emu:narrow")
    deadline = time.monotonic() + timeout_s
    while int(client.hget(state, "b") or 0) < 1 or broker.llen(queue) > 0:
        if time.monotonic() > deadline:
            raise RuntimeError("the backlog never formed")
        time.sleep(0.05)
    time.sleep(0.5)  # messages a worker prefetched are pushed by now


def pause_narrow(stack: LocalStack, client: redis.Redis, seconds: float) -> None:
    assert stack.config is not None
    limiter = RedisLimiter(client, keys=KeyBuilder(stack.config.redis.prefix))
    limiter.pause(stack.config.limit_group(stack.config.groups["emu:narrow"]), seconds)


def measure(
    stack: LocalStack, client: redis.Redis, subject: str, round_: int, args: argparse.Namespace
) -> Measure:
    if subject == "backlogged":
        # Paused while the prime goes in, so the backlog forms even on a machine where
        # the worker moves broker messages into the fair queue slower than the rate.
        pause_narrow(stack, client, args.prime / 50 + 1.0)
        primed = send(stack, "gpt-4o", args.prime)
        settle_backlog(stack, client)
        before = sample(stack, client)
        if args.scripts:
            start_script_log(client)
        began = time.monotonic()
        results = primed + send(stack, "gpt-4o", args.tasks)
    elif subject == "paced":
        before = sample(stack, client)
        if args.scripts:
            start_script_log(client)
        began = time.monotonic()
        results = []
        for n in range(args.tasks):
            results += send(stack, "gpt-4o-mini", 1)
            time.sleep(max(0.0, began + (n + 1) / args.rate - time.monotonic()))
    else:
        before = sample(stack, client)
        if args.scripts:
            start_script_log(client)
        began = time.monotonic()
        results = send(stack, "gpt-4o-mini", args.tasks)
    sent_cpu_s = time.process_time()  # the producer's part: its sends, not its wait
    wait_done(stack, results, before.admitted, timeout_s=300)
    after = sample(stack, client)
    n = after.admitted - before.admitted
    by_script = script_costs(client, n) if args.scripts else None
    return Measure(
        subject,
        round_,
        n,
        time.monotonic() - began,
        (after.worker_cpu_s - before.worker_cpu_s) * 1000 / n,
        (sent_cpu_s - before.producer_cpu_s) * 1000 / args.tasks,
        (after.redis_cpu_s - before.redis_cpu_s) * 1000 / n,
        (after.redis_commands - before.redis_commands) / n,
        per_completion(before.by_command, after.by_command, n),
        per_completion(before.usec_by_command, after.usec_by_command, n),
        by_script,
    )


def per_completion(before: dict[str, int], after: dict[str, int], n: int) -> dict[str, float]:
    """What grew between two samples of a counter per command, per completion."""
    grown = ((k, round((v - before.get(k, 0)) / n, 2)) for k, v in after.items())
    return dict(sorted(((k, v) for k, v in grown if v > 0), key=lambda kv: -kv[1]))


@dataclass(frozen=True)
class Idle:
    """CPU spent per second by a stack with nothing to do (timers, polls, the server's
    cron), measured between the subjects of a round: a completion that a limit spaces
    out is charged more of it than one that runs at once, whatever it costs itself."""

    round: int
    worker_cpu_ms_per_s: float
    redis_cpu_ms_per_s: float


def measure_idle(stack: LocalStack, client: redis.Redis, round_: int, seconds: float) -> Idle:
    before, began = sample(stack, client), time.monotonic()
    time.sleep(seconds)
    after, spent = sample(stack, client), time.monotonic() - began
    return Idle(
        round_,
        (after.worker_cpu_s - before.worker_cpu_s) * 1000 / spent,
        (after.redis_cpu_s - before.redis_cpu_s) * 1000 / spent,
    )


def net_of_idle(m: Measure, idle: Idle, key: str) -> float:
    """A per-completion CPU figure less the idle CPU of the time the measure took."""
    rate = idle.worker_cpu_ms_per_s if key == "worker_cpu_ms" else idle.redis_cpu_ms_per_s
    return float(getattr(m, key)) - rate * m.seconds / m.completions


FIGURES = (
    ("worker_cpu_ms", "worker CPU per completion, ms"),
    ("redis_cpu_ms", "Redis CPU per completion, ms"),
    ("redis_commands", "Redis commands per completion"),
    ("producer_cpu_ms", "producer CPU per send, ms"),
)


def print_table(measures: Sequence[Measure], idles: Sequence[Idle], control: str) -> None:
    """Backlogged against ``control`` ('immediate' or 'paced'), ratio per round."""
    rounds = sorted({m.round for m in measures})
    by = {(m.subject, m.round): m for m in measures}
    idle = {i.round: i for i in idles}
    rows: list[tuple[str, dict[int, float], dict[int, float]]] = [
        (
            label,
            {r: float(getattr(by[control, r], key)) for r in rounds},
            {r: float(getattr(by["backlogged", r], key)) for r in rounds},
        )
        for key, label in FIGURES
    ]
    for key in ("worker_cpu_ms", "redis_cpu_ms"):
        rows.append(
            (
                f"{key.split('_')[0]} CPU per completion net of idling, ms",
                {r: net_of_idle(by[control, r], idle[r], key) for r in rounds},
                {r: net_of_idle(by["backlogged", r], idle[r], key) for r in rounds},
            )
        )
    print(f"\n| figure | {control} (median) | backlogged (median) | ratio per round |")
    print("|---|---|---|---|")
    for label, immediate, backlogged in rows:
        ratios = [backlogged[r] / immediate[r] for r in rounds]
        print(
            f"| {label} | {statistics.median(immediate.values()):.2f}"
            f" | {statistics.median(backlogged.values()):.2f}"
            f" | median {statistics.median(ratios):.2f} ({', '.join(f'{x:.2f}' for x in ratios)}) |"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=300, help="completions measured per run")
    parser.add_argument("--prime", type=int, default=240, help="backlog built before a run")
    parser.add_argument("--rate", type=float, default=60.0, help="narrow group, requests/s")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--idle-s", type=float, default=3.0, help="idle measure per round")
    parser.add_argument(
        "--release-lead-s",
        type=float,
        help="[worker] release_lead_s (a pass releases about 1 + 0.8 x lead x rate items)",
    )
    parser.add_argument(
        "--scripts",
        action="store_true",
        help="break the server's time down per Lua script (SLOWLOG at 0 µs: it costs some"
        " CPU of its own, so read the ratios of a run without it)",
    )
    args = parser.parse_args(argv)
    measures: list[Measure] = []
    idles: list[Idle] = []
    with stack_for(args.rate, args.release_lead_s).start() as stack:
        assert stack.config is not None
        client = redis.Redis.from_url(stack.config.redis.url)
        stack.start_workers(1, pool="threads", concurrency=args.concurrency)
        subjects = ("immediate", "paced", "backlogged")
        for subject in subjects:  # warm-up, discarded
            measure(stack, client, subject, -1, argparse.Namespace(**{**vars(args), "tasks": 60}))
        for round_ in range(args.rounds):
            for subject in subjects if round_ % 2 == 0 else subjects[::-1]:
                m = measure(stack, client, subject, round_, args)
                measures.append(m)
                print(
                    f"round {round_ + 1} {subject}: {m.completions} in {m.seconds:.1f} s,"
                    f" worker {m.worker_cpu_ms:.2f} ms, redis {m.redis_cpu_ms:.2f} ms,"
                    f" {m.redis_commands:.1f} commands ({m.by_command}), server µs"
                    f" {m.usec_by_command}"
                    + (f", scripts (calls, µs) {m.by_script}" if m.by_script else ""),
                    file=sys.stderr,
                )
            idles.append(measure_idle(stack, client, round_, args.idle_s))
    print_table(measures, idles, "immediate")
    print_table(measures, idles, "paced")
    print(
        "\nidle CPU per second (worker, Redis):"
        + ", ".join(f" {i.worker_cpu_ms_per_s:.1f} / {i.redis_cpu_ms_per_s:.1f} ms" for i in idles)
    )
    path = write_raw(
        "backlog_cost",
        {
            "machine": machine(),
            "args": vars(args),
            "measures": [asdict(m) for m in measures],
            "idle": [asdict(i) for i in idles],
        },
    )
    print(f"\nraw: {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

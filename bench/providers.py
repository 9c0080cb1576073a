"""Provider accuracy (issue 15), acceptance 1: Anthropic with its output-tokens limit
binding. Run by hand, never in CI::

    .venv/bin/python bench/providers.py                 # about 4-6 minutes
    .venv/bin/python bench/providers.py --scale 0.5     # the same with other figures

The emulator speaks Anthropic and charges output as it is generated (its ``realtime``
mode, as Anthropic's 2026 docs say): a request is let in while the output bucket is
above 0, and its actual output is debited when produced. Limits are per 4 s window
(a minute compressed): 200 requests, 40k input and 8k output tokens (times
``--scale``); max_tokens 500, usage 40-100% of it, 1.5 s to generate the longest.

Subjects, interleaved in rounds with 1 and 4 worker processes (``-P threads``, 16
threads in all): the throttle with ``accounting = { output = "settle" }`` (the default
now: max_tokens reserved at admission, trued up to usage at the end) and with
``realtime`` (nothing reserved, the actual debited at the end: what the profile did
before). Each run sends enough tasks for 5 windows of output.

Figures per run: 429s over all provider answers, output utilization (output tokens
the emulator charged over its steady part, from the first window to the last, over
what the limit allows), and the peak window (the most output charged in any 4 s
window, over the limit). Issue 15's targets: <= 3% 429s, utilization >= 0.85, peak
<= 2.0x.

Markdown tables go to stdout; raw JSON to ``bench/results/providers-<time>.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.results_file import machine, write_raw  # noqa: E402
from throttle.testing.emulator import (  # noqa: E402
    EmulatorConfig,
    LatencyConfig,
    PoolConfig,
    Profile,
    parse_limits_text,
)
from workers.harness import COMPRESSED_HEADROOM, LocalStack  # noqa: E402

PROMPT = [{"role": "user", "content": "Summarise the quarterly report in five bullet points."}]
WINDOW_S = 4.0
MAX_TOKENS = 500


@dataclass(frozen=True)
class Run:
    mode: str
    workers: int
    round: int
    tasks: int
    refused_fraction: float
    utilization: float
    peak_ratio: float
    seconds: float


def limits(scale: float) -> dict[str, float]:
    return {
        "requests": round(200 * scale),
        "input_tokens": round(40_000 * scale),
        "output_tokens": round(8_000 * scale),
    }


def stack_for(mode: str, scale: float) -> LocalStack:
    caps = limits(scale)
    text = ",".join(f"{name}={cap}/{WINDOW_S:g}s" for name, cap in caps.items())
    emulator = EmulatorConfig(
        profile=Profile.ANTHROPIC,
        pools=(PoolConfig("default", parse_limits_text(text)),),
        latency=LatencyConfig(ttft_ms=50, tokens_per_s=MAX_TOKENS / 1.5, output_fraction_min=0.4),
    )
    group: dict[str, Any] = {
        "provider": "claude",
        "models": ["claude-sonnet"],
        "headroom": COMPRESSED_HEADROOM,
    }
    group.update({name: f"{cap}/{WINDOW_S:g}s" for name, cap in caps.items()})
    doc = {
        "providers": {
            "claude": {
                "profile": "anthropic",
                "base_url": "emulator",
                "accounting": {"output": mode},
            }
        },
        "groups": {"claude:sonnet": group},
    }
    return LocalStack(emulator, doc)


def one_run(mode: str, workers: int, round_: int, scale: float) -> Run:
    caps = limits(scale)
    # enough for five windows of output at the mean usage (70% of max_tokens)
    count = int(5 * caps["output_tokens"] / (0.7 * MAX_TOKENS))
    with stack_for(mode, scale).start() as stack:
        stack.start_workers(workers, pool="threads", concurrency=16 // workers)
        began = time.monotonic()
        results = [
            stack.enqueue(
                provider="claude", model="claude-sonnet", messages=PROMPT, max_tokens=MAX_TOKENS
            )
            for _ in range(count)
        ]
        samples: list[tuple[float, float]] = []  # (emulator time, output charged so far)
        while not all(r.ready() for r in results):
            if time.monotonic() - began > 300:
                raise RuntimeError("tasks unfinished after 300 s")
            stats = stack.emulator_stats()
            pool = stats["pools"]["org-emulator/default"]["output_tokens"]
            samples.append((stats["now_s"], pool["admitted_cost"]))
            time.sleep(0.2)
        seconds = time.monotonic() - began
        stats = stack.emulator_stats()
        pool = stats["pools"]["org-emulator/default"]["output_tokens"]
        answered = sum(stats["by_status"].values())
        refused = stats["by_status"].get("429", 0)
    started = next(t for t, cost in samples if cost > 0)
    ended = samples[-1][0]
    steady = [(t, c) for t, c in samples if started + WINDOW_S <= t <= ended - WINDOW_S]
    if len(steady) >= 2:
        (t0, c0), (t1, c1) = steady[0], steady[-1]
        utilization = (c1 - c0) / ((t1 - t0) * caps["output_tokens"] / WINDOW_S)
    else:
        utilization = float("nan")
    return Run(
        mode,
        workers,
        round_,
        count,
        refused / max(1, answered),
        utilization,
        pool["peak_window_cost"] / caps["output_tokens"],
        seconds,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every limit")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args(argv)
    runs: list[Run] = []
    for round_ in range(args.rounds):
        for workers in args.workers:
            for mode in ("settle", "realtime") if round_ % 2 == 0 else ("realtime", "settle"):
                run = one_run(mode, workers, round_, args.scale)
                runs.append(run)
                print(run, file=sys.stderr)
    print(f"\nAnthropic, output binding, limits x{args.scale:g} per {WINDOW_S:g} s window:\n")
    print("| accounting | workers | 429s (max) | output utilization (min) | peak window / limit |")
    print("|---|---|---|---|---|")
    for mode in ("settle", "realtime"):
        for workers in args.workers:
            mine = [r for r in runs if r.mode == mode and r.workers == workers]
            print(
                f"| {mode} | {workers} | {max(r.refused_fraction for r in mine):.1%}"
                f" | {min(r.utilization for r in mine):.2f}"
                f" (median {statistics.median(r.utilization for r in mine):.2f})"
                f" | {max(r.peak_ratio for r in mine):.2f} |"
            )
    path = write_raw(
        "providers", {"machine": machine(), "args": vars(args), "runs": [asdict(r) for r in runs]}
    )
    print(f"\nraw: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

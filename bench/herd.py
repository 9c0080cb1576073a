"""A herd of workers racing 429s (issue 15, acceptance 4). Run by hand, never in CI::

    .venv/bin/python bench/herd.py              # 20 runs, about 5 minutes
    .venv/bin/python bench/herd.py --runs 5

Each run: 4 worker processes x 4 threads keep a group of 40 requests/s saturated; the
emulator answers with 429s (retry-after 1 s) in three short storms. A request that
comes back before the wait it was told has run out is an early retry (the emulator
knows each request by its ``x-client-request-id``, the task id); the target is zero
in every run. Also shown: arrivals on the key while some told wait runs (requests
already on the wire when the first 429 of a storm left count there, unavoidably),
and whether every task succeeded.

Markdown goes to stdout; raw JSON to ``bench/results/herd-<time>.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

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

PROMPT = [{"role": "user", "content": "Say hello."}]
RATE_PER_S = 40
TASKS = 400
STORMS_S = ((2.0, 0.5), (5.0, 1.0), (8.0, 0.3))  # (start after the first send, length)


@dataclass(frozen=True)
class Run:
    run: int
    tasks: int
    succeeded: int
    refused_429: int
    early_retries: int
    arrivals_during_retry_after: int
    seconds: float


def one_run(n: int) -> Run:
    emulator = EmulatorConfig(
        pools=(
            PoolConfig(
                "default",
                parse_limits_text(f"requests={RATE_PER_S}/s,tokens=10000000/s"),
                models=("gpt-4o-mini",),
            ),
        ),
        latency=LatencyConfig(ttft_ms=30),
    )
    doc = {
        "providers": {"emu": {"profile": "openai", "base_url": "emulator"}},
        "groups": {
            "emu:mini": {
                "provider": "emu",
                "models": ["gpt-4o-mini"],
                "headroom": COMPRESSED_HEADROOM,
                "requests": f"{RATE_PER_S}/s",
                "tokens": "10000000/s",
            }
        },
    }
    with LocalStack(emulator, doc).start() as stack:
        stack.start_workers(4, pool="threads", concurrency=4)
        now_s = stack.emulator_stats()["now_s"]
        storms = [
            {
                "kind": "rate_limit",
                "start_s": now_s + start_s,
                "duration_s": length_s,
                "retry_after_s": 1,
            }
            for start_s, length_s in STORMS_S
        ]
        stack.emulator_post("/__emu/faults", {"faults": storms})
        began = time.monotonic()
        results = [
            stack.enqueue(provider="emu", model="gpt-4o-mini", messages=PROMPT, max_tokens=16)
            for _ in range(TASKS)
        ]
        while not all(r.ready() for r in results) and time.monotonic() - began < 120:
            time.sleep(0.2)
        seconds = time.monotonic() - began
        stats = stack.emulator_stats()
    return Run(
        n,
        TASKS,
        sum(r.successful() for r in results),
        stats["by_status"].get("429", 0),
        stats["early_retries"],
        stats["arrivals_during_retry_after"],
        seconds,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args(argv)
    runs = []
    for n in range(args.runs):
        run = one_run(n)
        runs.append(run)
        print(run, file=sys.stderr)
    print(f"\n429 storms against 4 workers x 4 threads, {args.runs} runs in a row:\n")
    print(
        "| runs | early retries (max per run) | 429s (min-max)"
        " | arrivals during a told wait | tasks succeeded |"
    )
    print("|---|---|---|---|---|")
    print(
        f"| {len(runs)} | {max(r.early_retries for r in runs)}"
        f" | {min(r.refused_429 for r in runs)}-{max(r.refused_429 for r in runs)}"
        f" | {min(r.arrivals_during_retry_after for r in runs)}"
        f"-{max(r.arrivals_during_retry_after for r in runs)}"
        f" | {sum(r.succeeded for r in runs)}/{sum(r.tasks for r in runs)} |"
    )
    path = write_raw(
        "herd", {"machine": machine(), "args": vars(args), "runs": [asdict(r) for r in runs]}
    )
    print(f"\nraw: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

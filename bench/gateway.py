"""What the HTTP front door costs (issue 13, acceptance 6). Run by hand, never in CI::

    .venv/bin/python bench/gateway.py --quick     # about 1 minute
    .venv/bin/python bench/gateway.py             # about 3 minutes

It starts its own redis-server, provider emulator (limits that never bind, a fixed
``--ttft-ms`` and no generation time), Celery workers (``--workers`` processes,
``-P threads -c 16``) and ``llm-throttle serve`` (LocalStack). Two subjects send the
same chat completions with the official ``openai`` SDK (``AsyncOpenAI``, ``--inflight``
requests in flight, ``--requests`` per block):

* ``direct``: to the emulator itself (base_url = the emulator);
* ``gateway``: to the gateway, which runs each as the throttled task on a worker.

Blocks alternate within each round (A B, then B A in the next round), so each round
has both subjects under the same machine load; figures are per round: requests/s,
latency p50/p99, the gateway's latency minus the direct one (added ms, p50 and p99)
and its requests/s over the direct ones. With ``--stream`` the same is measured for
streamed calls (latency to the first content chunk). The VM's speed drifts within
minutes (../shared/reference/perf-baselines.md): only same-round ratios mean much.

A Markdown table goes to stdout; raw JSON to ``bench/results/gateway-<time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import openai  # noqa: E402

from bench.results_file import machine, write_raw  # noqa: E402
from gateway.settings import key_digest  # noqa: E402
from throttle.testing.emulator import EmulatorConfig  # noqa: E402
from workers.harness import LocalStack  # noqa: E402

KEY = "bench-key"
MESSAGES = [{"role": "user", "content": "Say hello."}]


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def block(base_url: str, count: int, inflight: int, stream: bool) -> dict[str, Any]:
    """``count`` calls, ``inflight`` at a time; requests/s and latency (to the first
    content chunk when streaming)."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key=KEY, max_retries=0, timeout=120)
    latencies: list[float] = []
    gate = asyncio.Semaphore(inflight)

    async def one() -> None:
        async with gate:
            started = time.perf_counter()
            if not stream:
                await client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=MESSAGES,  # type: ignore[arg-type]
                    max_tokens=16,
                )
                latencies.append(time.perf_counter() - started)
                return
            first = None
            chunks = await client.chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,  # type: ignore[arg-type]
                max_tokens=16,
                stream=True,
            )
            async for chunk in chunks:
                if first is None and chunk.choices and chunk.choices[0].delta.content:
                    first = time.perf_counter() - started
            latencies.append(first if first is not None else time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    elapsed_s = time.perf_counter() - started
    await client.close()
    return {
        "requests_per_s": count / elapsed_s,
        "p50_ms": 1000 * quantile(latencies, 0.5),
        "p99_ms": 1000 * quantile(latencies, 0.99),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    emulator = EmulatorConfig.from_mapping(
        {
            "latency": {"ttft_ms": args.ttft_ms, "tokens_per_s": 0},
            "pools": [{"name": "default", "models": ["*"], "limits": {"requests": "100000/s"}}],
        }
    )
    group = {"provider": "emu", "models": ["gpt-4o-mini"], "requests": "50000/s"}
    document = {
        "providers": {"emu": {"profile": "openai", "base_url": "emulator"}},
        "groups": {"emu:mini": group},
        "gateway": {"keys": {key_digest(KEY): {"tenant": "bench"}}},
    }  # fmt: skip
    rounds: list[dict[str, Any]] = []
    with LocalStack(emulator, document) as stack:
        stack.start_workers(args.workers, concurrency=16)
        gateway = stack.start_gateway() + "/v1"
        direct = stack.emulator.base_url + "/v1"
        kinds = [False, True] if args.stream else [False]
        for stream in kinds:  # warm both paths
            asyncio.run(block(direct, 50, args.inflight, stream))
            asyncio.run(block(gateway, 50, args.inflight, stream))
        for n in range(args.rounds):
            for stream in kinds:
                order = [("direct", direct), ("gateway", gateway)]
                figures: dict[str, Any] = {"round": n + 1, "stream": stream}
                for name, url in order if n % 2 == 0 else order[::-1]:
                    figures[name] = asyncio.run(block(url, args.requests, args.inflight, stream))
                d, g = figures["direct"], figures["gateway"]
                figures["added_p50_ms"] = g["p50_ms"] - d["p50_ms"]
                figures["added_p99_ms"] = g["p99_ms"] - d["p99_ms"]
                figures["throughput_ratio"] = g["requests_per_s"] / d["requests_per_s"]
                rounds.append(figures)
                print(_row(figures), flush=True)
        stats = stack.emulator_stats()
    return {"args": vars(args), "machine": machine(), "rounds": rounds, "emulator": stats}


def _row(f: dict[str, Any]) -> str:
    d, g = f["direct"], f["gateway"]
    return (
        f"| {f['round']} | {'stream' if f['stream'] else 'sync'} "
        f"| {d['requests_per_s']:.0f} | {g['requests_per_s']:.0f} | {f['throughput_ratio']:.2f} "
        f"| {d['p50_ms']:.1f} / {d['p99_ms']:.1f} | {g['p50_ms']:.1f} / {g['p99_ms']:.1f} "
        f"| {f['added_p50_ms']:.1f} / {f['added_p99_ms']:.1f} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 200 requests")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=500, help="calls per block")
    parser.add_argument("--inflight", type=int, default=16, help="calls in flight at once")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--ttft-ms", type=float, default=20.0, help="the emulator's latency")
    parser.add_argument("--stream", action="store_true", help="also streamed calls")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.requests = 2, 200
    print("| round | kind | direct req/s | gateway req/s | ratio | direct p50/p99 ms "
          "| gateway p50/p99 ms | added p50/p99 ms |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    result = run(args)
    for stream in sorted({r["stream"] for r in result["rounds"]}):
        mine = [r for r in result["rounds"] if r["stream"] == stream]
        result[f"median_{'stream' if stream else 'sync'}"] = {
            key: statistics.median(r[key] for r in mine)
            for key in ("throughput_ratio", "added_p50_ms", "added_p99_ms")
        }
    print({k: v for k, v in result.items() if k.startswith("median")})
    print(f"raw: {write_raw('gateway', result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

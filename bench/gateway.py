"""What the HTTP front door costs (issue 13, acceptance 6). Run by hand, never in CI::

    .venv/bin/python bench/gateway.py --quick                       # under a minute
    .venv/bin/python bench/gateway.py --stream --serial 150         # about 3 minutes
    .venv/bin/python bench/gateway.py --baseline-tree /tmp/base --serial 150

It starts its own redis-server, provider emulator (limits that never bind, a fixed
``--ttft-ms`` and no generation time), Celery workers (``--workers`` processes,
``-P threads -c 16``) and ``llm-throttle serve`` (LocalStack). Two subjects send the
same chat completions with the official ``openai`` SDK (``AsyncOpenAI``, ``--inflight``
requests in flight, ``--requests`` per block):

* ``direct``: to the emulator itself (base_url = the emulator);
* ``gateway``: to the gateway, which runs each as the throttled task on a worker.

``--baseline-tree PATH`` adds a third subject, ``base``: a gateway run from another
checkout of the repository (run from PATH, with PATH first on its path; the same
workers, Redis and emulator), to measure a change to the gateway before and after in one run, e.g.
``git archive <commit> | tar -x -C /tmp/base``. Its ratios are against direct too,
and ``gateway``'s p50 minus ``base``'s is printed per round. (With ``--stream`` the
base must read the relay's format of this tree: the gateway as merged before the
relay named its worker cannot.)

Blocks alternate within each round (A B, then B A in the next round), so each round
has both subjects under the same machine load; figures are per round: requests/s,
latency p50/p99, the gateway's latency minus the direct one (added ms, p50 and p99)
and its requests/s over the direct ones. With ``--stream`` the same is measured for
streamed calls (latency to the first content chunk). ``--serial N`` then sends N calls
per subject one at a time, the subjects taking turns call by call: the latency each
adds without queueing for the 2 cores (which the blocks above are mostly about: the
CPU table shows each part's share). The VM's speed drifts within
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
import redis  # noqa: E402

from bench.backlog_cost import process_cpu_s  # noqa: E402
from bench.results_file import machine, write_raw  # noqa: E402
from gateway.settings import key_digest  # noqa: E402
from testing.emulator import EmulatorConfig  # noqa: E402
from testing.harness import LocalStack  # noqa: E402

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


class CpuMeter:
    """CPU seconds spent by each part of the stack, read around a block: the bench
    client (this process: the SDK), the emulator, Redis (``INFO cpu``), the workers,
    and each gateway; per request, they show where a gateway call's time goes."""

    def __init__(self, stack: LocalStack, gateways: dict[str, int]) -> None:
        assert stack.config is not None and stack.emulator.pid is not None
        self.stack = stack
        self.redis = redis.Redis.from_url(stack.config.redis.url)
        self.pids = {"emulator": stack.emulator.pid, **gateways}

    def sample(self) -> dict[str, float]:
        cpu = self.redis.info("cpu")
        seconds = {name: process_cpu_s(pid) for name, pid in self.pids.items()}
        seconds["client"] = time.process_time()
        seconds["redis"] = float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])
        seconds["workers"] = sum(process_cpu_s(w.pid) for w in self.stack.workers)
        return seconds

    def block(
        self, subject: str, url: str, count: int, inflight: int, stream: bool
    ) -> dict[str, Any]:
        """A block's figures, with ``cpu_ms``: per request, the subject's own gateway
        (none for direct) and the parts every subject shares."""
        before = self.sample()
        figures = asyncio.run(block(url, count, inflight, stream))
        after = self.sample()
        parts = ["client", "emulator", "redis", "workers"]
        if subject in self.pids:
            parts.append(subject)
        figures["cpu_ms"] = {
            ("gateway" if p == subject else p): 1000 * (after[p] - before[p]) / count for p in parts
        }
        return figures


def serve_entry(tree: Path) -> tuple[str, ...]:
    """How a checkout starts its gateway: ``-m gateway``, or before it had that entry,
    its command line's ``serve``."""
    if (tree / "gateway" / "__main__.py").exists():
        return ("-m", "gateway")
    cli = "tools.cli" if (tree / "tools" / "cli.py").exists() else "throttle.cli"
    return ("-m", cli, "serve")


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
        order = [("direct", stack.emulator.base_url + "/v1")]
        order.append(("gateway", stack.start_gateway() + "/v1"))
        if args.baseline_tree:
            base_tree = Path(args.baseline_tree).resolve()
            entry = serve_entry(base_tree)
            order.append(("base", stack.start_gateway(source_tree=base_tree, entry=entry) + "/v1"))
        names = [name for name, _url in order[1:]]
        meter = CpuMeter(stack, {n: g.pid for n, g in zip(names, stack.gateways, strict=True)})
        kinds = [False, True] if args.stream else [False]
        for stream in kinds:  # warm every path
            for _name, url in order:
                asyncio.run(block(url, 50, args.inflight, stream))
        for n in range(args.rounds):
            for stream in kinds:
                figures: dict[str, Any] = {"round": n + 1, "stream": stream}
                for name, url in order if n % 2 == 0 else order[::-1]:
                    figures[name] = meter.block(name, url, args.requests, args.inflight, stream)
                _compare(figures, "gateway", "")
                if args.baseline_tree:
                    _compare(figures, "base", "base_")
                    figures["gateway_minus_base_p50_ms"] = (
                        figures["gateway"]["p50_ms"] - figures["base"]["p50_ms"]
                    )
                rounds.append(figures)
                print(_row(figures), flush=True)
        serial = serial_latency(order, args.serial) if args.serial else None
        stats = stack.emulator_stats()
    return {
        "args": vars(args),
        "machine": machine(),
        "rounds": rounds,
        "serial": serial,
        "emulator": stats,
    }


def serial_latency(order: list[tuple[str, str]], count: int) -> dict[str, dict[str, float]]:
    """Latency without queueing for CPU: one call at a time, the subjects taking turns
    call by call (the order reversed every other turn), ``count`` calls each; p50,
    p90, p99 ms per subject and its p50 added to direct's."""
    clients = {name: openai.OpenAI(base_url=url, api_key=KEY, max_retries=0) for name, url in order}
    seconds: dict[str, list[float]] = {name: [] for name, _url in order}
    names = [name for name, _url in order]
    for n in range(count + 10):  # the first 10 turns warm up
        for name in names if n % 2 == 0 else names[::-1]:
            started = time.perf_counter()
            clients[name].chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,  # type: ignore[arg-type]
                max_tokens=16,
            )
            if n >= 10:
                seconds[name].append(time.perf_counter() - started)
    figures = {
        name: {f"p{q}_ms": 1000 * quantile(values, q / 100) for q in (50, 90, 99)}
        for name, values in seconds.items()
    }
    for name in names[1:]:
        figures[name]["added_p50_ms"] = figures[name]["p50_ms"] - figures["direct"]["p50_ms"]
    for name, f in figures.items():
        added = f" (+{f['added_p50_ms']:.1f})" if "added_p50_ms" in f else ""
        print(
            f"serial, {count} calls each, turn by turn: {name} p50 {f['p50_ms']:.1f}{added}"
            f" p90 {f['p90_ms']:.1f} p99 {f['p99_ms']:.1f} ms",
            flush=True,
        )
    return figures


def _compare(figures: dict[str, Any], subject: str, prefix: str) -> None:
    """``subject``'s added latency and requests/s ratio against direct calls."""
    d, g = figures["direct"], figures[subject]
    figures[f"{prefix}added_p50_ms"] = g["p50_ms"] - d["p50_ms"]
    figures[f"{prefix}added_p99_ms"] = g["p99_ms"] - d["p99_ms"]
    figures[f"{prefix}throughput_ratio"] = g["requests_per_s"] / d["requests_per_s"]


def _row(f: dict[str, Any]) -> str:
    d, g = f["direct"], f["gateway"]
    row = (
        f"| {f['round']} | {'stream' if f['stream'] else 'sync'} "
        f"| {d['requests_per_s']:.0f} | {g['requests_per_s']:.0f} | {f['throughput_ratio']:.2f} "
        f"| {d['p50_ms']:.1f} / {d['p99_ms']:.1f} | {g['p50_ms']:.1f} / {g['p99_ms']:.1f} "
        f"| {f['added_p50_ms']:.1f} / {f['added_p99_ms']:.1f} |"
    )
    if "base" in f:
        b = f["base"]
        row += (
            f" {b['requests_per_s']:.0f} | {f['base_throughput_ratio']:.2f} "
            f"| {b['p50_ms']:.1f} / {b['p99_ms']:.1f} | {f['gateway_minus_base_p50_ms']:.1f} |"
        )
    return row


def cpu_table(rounds: list[dict[str, Any]]) -> str:
    """Median CPU ms per request by part of the stack, per subject and kind."""
    parts = ["client", "emulator", "redis", "workers", "gateway"]
    lines = ["| subject | kind | " + " | ".join(parts) + " | total |", "|---" * 7 + "|"]
    for subject in ("direct", "gateway", "base"):
        for stream in (False, True):
            mine = [r[subject]["cpu_ms"] for r in rounds if subject in r and r["stream"] == stream]
            if not mine:
                continue
            medians = [statistics.median(m.get(p, 0.0) for m in mine) for p in parts]
            cells = " | ".join(f"{v:.2f}" for v in medians)
            kind = "stream" if stream else "sync"
            lines.append(f"| {subject} | {kind} | {cells} | {sum(medians):.2f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 200 requests")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=500, help="calls per block")
    parser.add_argument("--inflight", type=int, default=16, help="calls in flight at once")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--ttft-ms", type=float, default=20.0, help="the emulator's latency")
    parser.add_argument("--stream", action="store_true", help="also streamed calls")
    parser.add_argument("--baseline-tree", help="another checkout's gateway as subject 'base'")
    parser.add_argument(
        "--serial", type=int, default=0, help="then N calls each, one at a time, turn by turn"
    )
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.requests = 2, 200
    header = ("| round | kind | direct req/s | gateway req/s | ratio | direct p50/p99 ms "
              "| gateway p50/p99 ms | added p50/p99 ms |")  # fmt: skip
    if args.baseline_tree:
        header += " base req/s | base ratio | base p50/p99 ms | gateway - base p50 ms |"
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    result = run(args)
    for stream in sorted({r["stream"] for r in result["rounds"]}):
        mine = [r for r in result["rounds"] if r["stream"] == stream]
        keys = ["throughput_ratio", "added_p50_ms", "added_p99_ms"]
        if args.baseline_tree:
            keys += ["base_throughput_ratio", "base_added_p50_ms", "gateway_minus_base_p50_ms"]
        result[f"median_{'stream' if stream else 'sync'}"] = {
            key: statistics.median(r[key] for r in mine) for key in keys
        }
    print({k: v for k, v in result.items() if k.startswith("median")})
    print(cpu_table(result["rounds"]))
    print(f"raw: {write_raw('gateway', result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

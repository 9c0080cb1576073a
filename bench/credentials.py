"""Two credentials on one model (issue 15, acceptance 5). Run by hand, never in CI::

    .venv/bin/python bench/credentials.py              # about 2 minutes

The emulator gives each of two keys its own quota (20 requests/s each, separate
organizations); the throttle's group lists both keys as ``credentials`` with the
same 20/s. 800 tasks that name no key are sent; the group picks one for each. Shown
per worker count (1 and 4 processes, 16 threads in all): each key's rate over 12 s of
the steady part, over its limit, and the 429s. Target: both >= 0.95, zero 429s.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from testing.emulator import (  # noqa: E402
    EmulatorConfig,
    LatencyConfig,
    PoolConfig,
    parse_limits_text,
)
from testing.harness import COMPRESSED_HEADROOM, LocalStack  # noqa: E402

PROMPT = [{"role": "user", "content": "Say hello."}]
KEYS = {"LLM_THROTTLE_KEY_KEY_A": "sk-a", "LLM_THROTTLE_KEY_KEY_B": "sk-b"}


def one_run(workers: int) -> tuple[list[float], int]:
    emulator = EmulatorConfig(
        pools=(PoolConfig("default", parse_limits_text("requests=20/s,tokens=1000000/s")),),
        keys={"sk-a": "org-a", "sk-b": "org-b"},
        latency=LatencyConfig(ttft_ms=20),
    )
    doc = {
        "providers": {"emu": {"profile": "openai", "base_url": "emulator"}},
        "groups": {
            "emu:mini": {
                "provider": "emu",
                "models": ["gpt-4o-mini"],
                "headroom": COMPRESSED_HEADROOM,
                "requests": "20/s",
                "tokens": "1000000/s",
                "credentials": ["key-a", "key-b"],
            }
        },
    }
    with LocalStack(emulator, doc).start() as stack:
        stack.start_workers(workers, pool="threads", concurrency=16 // workers, extra_env=KEYS)
        for _ in range(800):
            stack.enqueue(provider="emu", model="gpt-4o-mini", messages=PROMPT, max_tokens=16)

        def used(stats: dict, org: str) -> float:  # type: ignore[type-arg]
            return float(stats["pools"][f"{org}/default"]["requests"]["admitted_cost"])

        time.sleep(3)
        first, t_first = stack.emulator_stats(), time.monotonic()
        time.sleep(12)
        last, t_last = stack.emulator_stats(), time.monotonic()
    rates = [(used(last, o) - used(first, o)) / (t_last - t_first) / 20 for o in ("org-a", "org-b")]
    return rates, int(last["by_status"].get("429", 0))


def main() -> int:
    print("| workers | key-a rate / limit | key-b rate / limit | 429s |")
    print("|---|---|---|---|")
    for workers in (1, 4):
        rates, refused = one_run(workers)
        print(f"| {workers} | {rates[0]:.2f} | {rates[1]:.2f} | {refused} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

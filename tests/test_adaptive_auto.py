"""``auto`` limits end to end: no numbers configured, the provider's headers teach them.

Real workers and the emulator (OpenAI headers), compressed to 1-second windows. The
group starts at the conservative defaults (1 request/s, 333 tokens/s) and must run at
the emulator's true 20 requests/s after the first responses, without 429s.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from testing.emulator import (
    EmulatorConfig,
    LatencyConfig,
    PoolConfig,
    Profile,
    parse_limits_text,
)
from testing.harness import COMPRESSED_HEADROOM, LocalStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TRUE_REQUESTS_PER_S = 20
PROMPT = [{"role": "user", "content": "Classify this sentence, please."}]


def requests_per_window(stack: LocalStack, count: int) -> list[tuple[float, int]]:
    """Per 1 s window: (requests the emulator admitted, 429s it sent)."""
    samples = []

    def counters() -> tuple[float, int]:
        stats = stack.emulator_stats()
        admitted = stats["pools"]["org-emulator/default"]["requests"]["admitted_cost"]
        return float(admitted), int(stats["by_status"].get("429", 0))

    previous = counters()
    for _ in range(count):
        time.sleep(1.0)
        current = counters()
        samples.append((current[0] - previous[0], current[1] - previous[1]))
        previous = current
    return samples


@pytest.mark.parametrize(
    "workers",
    [1, 4],
)
def test_auto_limits_learn_the_provider_limits_from_headers(
    stacks: list[LocalStack], workers: int
) -> None:
    emulator = EmulatorConfig(
        profile=Profile.OPENAI,
        pools=(
            PoolConfig(
                "default",
                parse_limits_text(f"requests={TRUE_REQUESTS_PER_S}/s,tokens=40000/s"),
            ),
        ),
        latency=LatencyConfig(ttft_ms=20),
    )
    doc: dict[str, Any] = {
        "providers": {"emu": {"profile": "openai", "base_url": "emulator"}},
        "groups": {
            "emu:m": {
                "provider": "emu",
                "models": ["m"],
                "requests": "auto/s",
                "tokens": "auto/s",
                "headroom": COMPRESSED_HEADROOM,
            }
        },
    }
    stack = LocalStack(emulator, doc).start()
    stacks.append(stack)
    # The backlog first: enqueueing is slower on a loaded machine and must not run dry.
    for _ in range(450):
        stack.enqueue(provider="emu", model="m", messages=PROMPT, max_tokens=10)
    stack.start_workers(workers, pool="threads", concurrency=max(4, 32 // workers))
    per_window = requests_per_window(stack, 12)
    assert sum(refused for _, refused in per_window) == 0, per_window
    steady = per_window[2:]  # the first responses teach the limits
    utilization = sum(admitted for admitted, _ in steady) / (TRUE_REQUESTS_PER_S * len(steady))
    assert utilization >= 0.95, per_window

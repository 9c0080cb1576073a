"""What the demo runs: two models in separate quota pools, three tenants, varied prompts.

The same limits go to the provider emulator and to the throttle configuration, so the
report can hold what the provider admitted against what it allows.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from testing.emulator import EmulatorConfig, LatencyConfig, PoolConfig, parse_limits
from throttle.limits import parse_rate

PROVIDER = "emu"


@dataclass(frozen=True)
class ModelPlan:
    """One model in its own quota pool, with the same limits in the emulator and in
    the throttle configuration."""

    model: str
    #: Limit dimension -> rate spec, e.g. ``{"requests": "12/s", "tokens": "10000/s"}``.
    limits: Mapping[str, str]
    #: Fraction of the demo's tasks that go to this model.
    share: float
    max_tokens_choices: tuple[int, ...]

    @property
    def group(self) -> str:
        return f"{PROVIDER}:{self.model}"

    @property
    def pool(self) -> str:
        return self.model


@dataclass(frozen=True)
class TenantPlan:
    name: str
    #: Fraction of the demo's tasks this tenant sends.
    share: float


@dataclass(frozen=True)
class DemoRequest:
    model: str
    tenant: str
    messages: tuple[Mapping[str, str], ...]
    max_tokens: int


@dataclass(frozen=True)
class DemoPlan:
    models: tuple[ModelPlan, ...]
    tenants: tuple[TenantPlan, ...]
    #: Every tenant's own share of a model's limits, per model (group).
    tenant_limits: Mapping[str, Mapping[str, str]]
    ttft_ms: float = 250.0
    tokens_per_s: float = 400.0
    workers: int = 2
    threads_per_worker: int = 16
    #: Burst margin kept unused (DESIGN principle 10); the refill rate is not reduced.
    #: Per-second limits weigh scheduling jitter 60 times more than per-minute ones.
    headroom: float = 0.05

    def emulator_config(self) -> EmulatorConfig:
        return EmulatorConfig(
            pools=tuple(
                PoolConfig(m.pool, parse_limits(dict(m.limits), m.pool), models=(m.model,))
                for m in self.models
            ),
            latency=LatencyConfig(ttft_ms=self.ttft_ms, tokens_per_s=self.tokens_per_s),
            seed=7,
        )

    def throttle_doc(self) -> dict[str, Any]:
        """The throttle configuration; LocalStack fills in Redis URLs and the emulator."""
        groups: dict[str, Any] = {}
        for m in self.models:
            group: dict[str, Any] = {
                "provider": PROVIDER,
                "models": [m.model],
                "headroom": self.headroom,
                **m.limits,
            }
            if m.group in self.tenant_limits:
                group["tenant"] = dict(self.tenant_limits[m.group])
            groups[m.group] = group
        return {
            "providers": {PROVIDER: {"profile": "openai", "base_url": "emulator"}},
            "groups": groups,
        }

    def requests(self, total: int, seed: int = 1) -> list[DemoRequest]:
        """``total`` requests: models and tenants in their shares, shuffled together."""
        rng = random.Random(seed)
        models = _apportion([m.share for m in self.models], total)
        out: list[DemoRequest] = []
        for model, count in zip(self.models, models, strict=True):
            tenants = _apportion([t.share for t in self.tenants], count)
            for tenant, n in zip(self.tenants, tenants, strict=True):
                out += [
                    DemoRequest(
                        model.model,
                        tenant.name,
                        _prompt(rng),
                        rng.choice(model.max_tokens_choices),
                    )
                    for _ in range(n)
                ]
        rng.shuffle(out)
        return out


def _apportion(shares: Sequence[float], total: int) -> list[int]:
    """Whole counts in proportion to ``shares`` summing to ``total`` (largest remainder)."""
    weight = sum(shares)
    exact = [total * s / weight for s in shares]
    counts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(shares)), key=lambda i: counts[i] - exact[i])
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


_TOPICS = (
    "the causes of the 1929 stock market crash",
    "how a bloom filter works",
    "the water cycle, for a ten-year-old",
    "why the sky is blue",
    "a customer complaint about a late delivery",
    "the main ideas of stoic philosophy",
    "the trade-offs between SQL and NoSQL databases",
    "the plot of Hamlet",
    "a release note for a bug-fix version of a mobile app",
    "how vaccines train the immune system",
    "the history of the printing press",
    "rate limiting with a token bucket",
)
_TASKS = (
    "Summarise {topic} in three bullet points.",
    "Write a short paragraph about {topic}.",
    "Explain {topic} as plainly as you can.",
    "List five questions a curious reader might ask about {topic}.",
)
_CONTEXT = "Context: the reader is busy, reads on a phone and wants facts, not flourish. "


def _prompt(rng: random.Random) -> tuple[Mapping[str, str], ...]:
    text = rng.choice(_TASKS).format(topic=rng.choice(_TOPICS))
    user = {"role": "user", "content": _CONTEXT * rng.randint(0, 6) + text}
    if rng.random() < 0.5:
        return ({"role": "system", "content": "You are a concise assistant."}, user)
    return (user,)


#: A tier's shape, per second instead of per minute: the small model is bound by
#: requests and has tokens to spare; the large one is bound by tokens. Each tenant may
#: use half of a model's quota, so the busiest tenant is held to its share.
DEFAULT_PLAN = DemoPlan(
    models=(
        ModelPlan(
            "gpt-4o-mini",
            {"requests": "12/s", "tokens": "10000/s"},
            share=0.6,
            max_tokens_choices=(32, 64, 128, 256),
        ),
        ModelPlan(
            "gpt-4o",
            {"requests": "15/s", "tokens": "3000/s"},
            share=0.4,
            max_tokens_choices=(64, 128, 256, 512),
        ),
    ),
    tenants=(TenantPlan("acme", 0.5), TenantPlan("globex", 0.3), TenantPlan("initech", 0.2)),
    tenant_limits={
        "emu:gpt-4o-mini": {"requests": "6/s"},
        "emu:gpt-4o": {"tokens": "1500/s"},
    },
)


def per_minute(spec: str) -> float:
    """A rate spec such as ``"12/s"`` in units per minute."""
    rate, _zone = parse_rate(spec)
    return rate.capacity / rate.period_s * 60.0

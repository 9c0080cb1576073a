"""Prometheus metrics: the recording API, and two workers each serving their own counts."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest
import requests
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from testing.emulator import (
    EmulatorConfig,
    LatencyConfig,
    PoolConfig,
    parse_limits_text,
)
from testing.harness import LocalStack
from testing.redis_server import free_port
from workers import metrics
from workers.metrics import configured_port


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    fresh = CollectorRegistry()
    metrics.reset_for_tests(fresh)
    yield fresh
    metrics.reset_for_tests(CollectorRegistry())


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    got = registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


def test_without_prometheus_client_recording_is_a_no_op_and_serving_is_refused() -> None:
    """The ops extra is optional: without prometheus_client the task API and the worker
    import, recording does nothing, and a port asked for is a clear error."""
    script = textwrap.dedent(
        """
        import sys
        sys.modules["prometheus_client"] = None  # as if not installed
        import tasks, tasks.completion, workers.app
        from throttle.errors import ConfigError
        from workers import metrics
        metrics.admitted("g", {"requests": 1.0})
        metrics.waited("g", 0.5)
        assert metrics.metrics() is None
        import os
        os.environ[metrics.PORT_ENV] = "0"
        try:
            metrics.MetricsStep.include_if(object.__new__(metrics.MetricsStep), None)
        except ConfigError as exc:
            print("refused:", exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "refused:" in done.stdout and "llm-throttle[ops]" in done.stdout


def test_recording_api_counts_by_group_and_dimension(registry: CollectorRegistry) -> None:
    metrics.admitted("emu:mini", {"requests": 1.0, "tokens": 120.0})
    metrics.admitted("emu:mini", {"requests": 1.0, "tokens": 80.0})
    metrics.admitted("emu:big", {"requests": 1.0, "tokens": 0.0})
    metrics.parked("emu:mini")
    metrics.rate_limited("emu:mini", 0.5)
    metrics.settled("emu:mini", {"requests": 1.0, "tokens": 120.0}, {"tokens": -70.0}, 0.55)
    metrics.waited("emu:mini", 0.3, "interactive", "acme")
    metrics.waited("emu:mini", 12.0, "interactive", "acme")

    assert value(registry, "llm_throttle_admissions_total", group="emu:mini") == 2
    assert value(registry, "llm_throttle_admissions_total", group="emu:big") == 1
    assert (
        value(registry, "llm_throttle_reserved_total", group="emu:mini", dimension="tokens") == 200
    )
    assert value(registry, "llm_throttle_reserved_total", group="emu:big", dimension="tokens") == 0
    assert value(registry, "llm_throttle_settled_total", group="emu:mini", dimension="tokens") == 50
    assert (
        value(registry, "llm_throttle_settled_total", group="emu:mini", dimension="requests") == 1
    )
    assert value(registry, "llm_throttle_parks_total", group="emu:mini") == 1
    assert value(registry, "llm_throttle_provider_429s_total", group="emu:mini") == 1
    assert value(registry, "llm_throttle_adaptive_multiplier", group="emu:mini") == 0.55
    waits = {"group": "emu:mini", "lane": "interactive", "tenant": "acme"}
    assert value(registry, "llm_throttle_wait_seconds_count", **waits) == 2
    assert value(registry, "llm_throttle_wait_seconds_bucket", **waits, le="0.5") == 1


def test_started_cost_counts_by_lane_and_tenant(registry: CollectorRegistry) -> None:
    """A tenant's share used is its started cost over the group's, per dimension."""
    metrics.admitted("g", {"requests": 1.0, "tenant.acme.requests": 1.0}, "interactive", "acme")
    metrics.admitted("g", {"requests": 3.0}, "batch", "other")
    labels = {"group": "g", "dimension": "requests"}
    acme = value(
        registry, "llm_throttle_started_cost_total", lane="interactive", tenant="acme", **labels
    )
    other = value(
        registry, "llm_throttle_started_cost_total", lane="batch", tenant="other", **labels
    )
    assert (acme, other) == (1.0, 3.0)
    own = {"group": "g", "lane": "interactive", "tenant": "acme"}
    assert (
        value(registry, "llm_throttle_started_cost_total", dimension="tenant.acme.requests", **own)
        == 0
    )


def test_a_recording_failure_never_raises(registry: CollectorRegistry) -> None:
    metrics.admitted("g", {"tokens": "not a number"})  # type: ignore[dict-item]
    metrics.settled("g", {"tokens": 1.0}, {"tokens": object()}, None)  # type: ignore[dict-item]
    metrics.waited("g", 1.0)  # still records after a failure
    assert value(registry, "llm_throttle_wait_seconds_count", group="g", lane="", tenant="") == 1


def test_a_tenant_label_is_its_name_only_with_its_own_plan() -> None:
    assert metrics.tenant_label("acme", {"acme"}) == "acme"
    assert metrics.tenant_label("tenant-9731", {"acme"}) == "other"
    assert metrics.tenant_label(None, {"acme"}) == ""


def test_port_from_the_environment() -> None:
    assert configured_port({}) is None
    assert configured_port({"LLM_THROTTLE_METRICS_PORT": ""}) is None
    assert configured_port({"LLM_THROTTLE_METRICS_PORT": "0"}) == 0
    assert configured_port({"LLM_THROTTLE_METRICS_PORT": "9464"}) == 9464
    with pytest.raises(ValueError):
        configured_port({"LLM_THROTTLE_METRICS_PORT": "70000"})


# -- two worker processes, two endpoints ------------------------------------------------


def scrape(port: int) -> dict[str, float]:
    """Admissions from one worker's endpoint, the wait count and settled units by dimension."""
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in ("llm_throttle_admissions_total", "llm_throttle_wait_seconds_count"):
                found[sample.name] = found.get(sample.name, 0.0) + sample.value
            elif sample.name == "llm_throttle_settled_total":
                dimension = sample.labels["dimension"]
                found[f"settled:{dimension}"] = (
                    found.get(f"settled:{dimension}", 0.0) + sample.value
                )
    return found


@pytest.mark.integration
@pytest.mark.slow
def test_two_workers_each_serve_their_own_counts(stacks: list[LocalStack]) -> None:
    emu = EmulatorConfig(
        pools=(
            PoolConfig(
                "default",
                parse_limits_text("requests=40/s,tokens=1000000/s"),
                models=("gpt-4o-mini",),
            ),
        ),
        latency=LatencyConfig(ttft_ms=20),
    )
    group = {"provider": "emu", "models": ["gpt-4o-mini"], "headroom": 0.05}
    doc = {
        "providers": {"emu": {"profile": "openai", "base_url": "emulator"}},
        "groups": {"emu:mini": {**group, "requests": "40/s", "tokens": "1000000/s"}},
    }
    stack = LocalStack(emu, doc).start()
    stacks.append(stack)
    ports = [free_port(), free_port()]
    # One prefork worker (its endpoint aggregates its pool children) and one threads one.
    stack.start_workers(
        1, pool="prefork", concurrency=2, extra_env={"LLM_THROTTLE_METRICS_PORT": str(ports[0])}
    )
    stack.start_workers(
        1, pool="threads", concurrency=4, extra_env={"LLM_THROTTLE_METRICS_PORT": str(ports[1])}
    )
    prompt = [{"role": "user", "content": "Summarise a short story."}]
    results = [
        stack.enqueue(provider="emu", model="gpt-4o-mini", messages=prompt, max_tokens=20)
        for _ in range(40)
    ]
    deadline = time.monotonic() + 30
    while not all(r.ready() for r in results):
        assert time.monotonic() < deadline, "tasks unfinished"
        time.sleep(0.2)
    assert all(r.successful() for r in results)
    attempts = sum(r.get()["throttle"]["attempts"] for r in results)

    deadline = time.monotonic() + 5
    while True:  # the last settle may land a moment after the result
        scraped = [scrape(port) for port in ports]
        admissions = [s.get("llm_throttle_admissions_total", 0.0) for s in scraped]
        settled = sum(s.get("settled:requests", 0.0) for s in scraped)
        if (sum(admissions) >= attempts and settled >= 40) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert settled == 40, "every completed call settles its reservation's handle"
    assert all(a > 0 for a in admissions), admissions
    assert sum(admissions) == attempts >= 40, (admissions, attempts)
    waits = sum(s.get("llm_throttle_wait_seconds_count", 0.0) for s in scraped)
    assert waits == 40

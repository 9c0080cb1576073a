"""Everything on a Sentinel-managed master (issue 12, acceptance 3, the Sentinel
equivalent): the limiter, the broker and the results, on a master with one replica
watched by a real Sentinel started from the embedded server binary. The master is
SIGKILLed mid-run; the Sentinel promotes the replica, workers follow it, and no task
is lost."""

from __future__ import annotations

import pytest
from test_e2e import emulator, survives_a_failover, throttle_doc

from testing.harness import LocalStack
from testing.replicated import EmbeddedSentinelSet
from workers.message import broker_db_for_release

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_master_failed_over_by_the_sentinel_loses_no_task(stacks: list[LocalStack]) -> None:
    threads = 8
    with EmbeddedSentinelSet(replicas=1, sentinels=1) as sentinel:
        stack = LocalStack(
            emulator({"default": ("gpt-4o-mini", "requests=100/s,tokens=1000000/s")}, ttft_ms=100),
            throttle_doc(
                {"emu:mini": {"models": ["gpt-4o-mini"], "requests": "20/s", "tokens": "1M/s"}},
                redis={"url": sentinel.url(0)},
                celery={
                    "broker_url": sentinel.url(1),
                    "result_backend": sentinel.url(2),
                    "visibility_timeout_s": 8,
                },
                worker={"release_stale_s": 3.0},
            ),
        ).start()
        stacks.append(stack)
        assert stack.config is not None
        # one master holds both: releases are pushed onto the broker's queue in Redis
        assert broker_db_for_release(stack.config.redis.url, stack.config.broker_url) == 1
        survives_a_failover(stack, sentinel.fail_over, threads)
        stack.stop_workers()

"""The limiter on a real Redis Cluster (issue 12, acceptance 3): three masters, each
with a replica, started from the embedded server binary.

Safety under contention holds across masters, a dispatcher is woken by a push to any
group (its wake lists live in different slots), and a master killed mid-run fails
over to its replica with no task lost.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from test_e2e import emulator, survives_a_failover, throttle_doc
from test_limiter_contention import assert_conforms, run_workers

from testing.harness import LocalStack
from testing.replicated import EmbeddedCluster
from throttle.config import Lane
from throttle.connect import connect
from throttle.keys import KeyBuilder
from throttle.limiter import RedisLimiter
from throttle.limits import LimitGroup
from throttle.scheduler import FairScheduler, QueuedItem
from throttle.status_read import read_raw_states

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster() -> Iterator[EmbeddedCluster]:
    with EmbeddedCluster(masters=3, replicas=1) as started:
        yield started


def groups_on_two_masters(cluster: EmbeddedCluster, prefix: str) -> list[str]:
    """Two group names whose keys live on different masters."""
    keys = KeyBuilder(prefix)
    first = "g0"
    owner = cluster.master_port(keys.state(first))
    second = next(
        f"g{n}" for n in range(1, 100) if cluster.master_port(keys.state(f"g{n}")) != owner
    )
    return [first, second]


def test_eight_processes_never_exceed_groups_on_two_masters(
    cluster: EmbeddedCluster, key_prefix: str
) -> None:
    groups = groups_on_two_masters(cluster, key_prefix)
    events = run_workers(cluster.url, key_prefix, groups, [0.0] * 8, duration_s=3.0)
    for group in groups:
        assert_conforms(events, group, 3.0)


def test_a_push_to_any_group_wakes_the_dispatcher(
    cluster: EmbeddedCluster, key_prefix: str
) -> None:
    client = connect(cluster.url)
    scheduler = FairScheduler(RedisLimiter(client, keys=KeyBuilder(key_prefix)), [Lane("i")])
    names = groups_on_two_masters(cluster, key_prefix)
    try:
        assert scheduler.wait_for_wake(names, 0.2) is None
        for name in names:
            group = LimitGroup.from_specs(name, {"requests": "1/s"})
            for n in range(3):  # the first fills the bucket; a later one wakes
                scheduler.push(
                    group, QueuedItem(f"{name}-{n}", {"requests": 1}, "i", None, 1, 0, "")
                )
            started = time.monotonic()
            assert scheduler.wait_for_wake(names, 5.0) == name
            assert time.monotonic() - started < 2.0
    finally:
        scheduler.stop_waking()
        client.close()


@pytest.mark.slow
def test_a_master_killed_mid_run_fails_over_and_no_task_is_lost(
    stacks: list[LocalStack],
) -> None:
    """The limiter on the cluster, the broker and results on a single server: the
    master owning the group's slot is SIGKILLed while 200 tasks run; its replica takes
    over and every task succeeds."""
    threads = 8
    with EmbeddedCluster(masters=3, replicas=1) as cluster:
        stack = LocalStack(
            emulator({"default": ("gpt-4o-mini", "requests=100/s,tokens=1000000/s")}, ttft_ms=100),
            throttle_doc(
                {"emu:mini": {"models": ["gpt-4o-mini"], "requests": "20/s", "tokens": "1M/s"}},
                redis={"url": cluster.url},
                celery={"visibility_timeout_s": 8},
                worker={"release_stale_s": 3.0},
            ),
        ).start()
        stacks.append(stack)
        assert stack.config is not None
        assert stack.config.redis.url == cluster.url
        survives_a_failover(
            stack, lambda: cluster.fail_over(KeyBuilder().state("emu:mini")), threads
        )


def test_the_credential_choice_and_the_status_read_work_across_masters(
    cluster: EmbeddedCluster, key_prefix: str
) -> None:
    """Both read a group's state with the server's clock; a Cluster pipelines no TIME."""
    client = connect(cluster.url)
    limiter = RedisLimiter(client, keys=KeyBuilder(key_prefix))
    names = groups_on_two_masters(cluster, key_prefix)
    groups = [LimitGroup.from_specs(name, {"requests": "2/s"}) for name in names]
    try:
        for group in groups:
            assert limiter.admit(group, {"requests": 2}, max_wait_s=0).reserved
            wait_s, queued = limiter.start_wait_s(group, {"requests": 2})
            assert 0.5 < wait_s <= 1.0 and queued == 0, wait_s
        _now_ms, states = read_raw_states(client, KeyBuilder(key_prefix), names)
        assert [bool(state.fields) for state in states] == [True, True]
    finally:
        client.close()

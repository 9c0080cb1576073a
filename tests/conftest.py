"""Shared fixtures: one real redis-server per test session, a fresh key prefix per test.

``LLM_THROTTLE_TEST_SERVER=valkey`` runs every server on valkey-server 9 instead of
redis-server 6.2; ``LLM_THROTTLE_TEST_TOPOLOGY=cluster`` makes the session's
``redis_url`` a 3-master Redis Cluster (the limiter and scheduler tests then run on it).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from redis.cluster import RedisCluster

from testing.harness import LocalStack
from testing.redis_server import EmbeddedRedis, redis_url_from_env
from testing.replicated import EmbeddedCluster
from throttle.connect import RedisClient, connect


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    existing = redis_url_from_env()
    if existing:
        yield existing
        return
    if os.environ.get("LLM_THROTTLE_TEST_TOPOLOGY") == "cluster":
        with EmbeddedCluster(masters=3, replicas=0) as cluster:
            yield cluster.url
        return
    with EmbeddedRedis() as server:
        yield server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[RedisClient]:
    client = connect(redis_url)
    yield client
    client.close()


@pytest.fixture
def key_prefix() -> str:
    """A prefix no other test uses, so tests never see each other's keys."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def stacks() -> Iterator[list[LocalStack]]:
    """Local deployments a test starts (testing.harness.LocalStack); all stopped after."""
    started: list[LocalStack] = []
    yield started
    for stack in started:
        stack.stop()


def keys_matching(client: RedisClient, pattern: str) -> list[bytes]:
    """KEYS ``pattern`` on the one server, or on every master of a Cluster."""
    if isinstance(client, RedisCluster):
        return list(client.keys(pattern, target_nodes=RedisCluster.PRIMARIES))
    return list(client.keys(pattern))


def command_calls(client: RedisClient, command: str) -> int:
    """How many times ``command`` ran (scripts' calls included), on the one server or
    summed over every master of a Cluster."""
    if isinstance(client, RedisCluster):
        stats = client.info("commandstats", target_nodes=RedisCluster.PRIMARIES)
        per_node = list(stats.values())
    else:
        per_node = [client.info("commandstats")]
    return sum(int(node.get(f"cmdstat_{command}", {}).get("calls", 0)) for node in per_node)

"""Shared fixtures: one real redis-server per test session, a fresh key prefix per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from throttle.testing.redis_server import EmbeddedRedis, redis_url_from_env
from workers.harness import LocalStack


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    existing = redis_url_from_env()
    if existing:
        yield existing
        return
    with EmbeddedRedis() as server:
        yield server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def key_prefix() -> str:
    """A prefix no other test uses, so tests never see each other's keys."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def stacks() -> Iterator[list[LocalStack]]:
    """Local deployments a test starts (workers.harness.LocalStack); all stopped after."""
    started: list[LocalStack] = []
    yield started
    for stack in started:
        stack.stop()

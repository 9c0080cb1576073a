"""gateway/relay.py against a real Redis: a relay read to its end, and a quiet one
that the task's stored outcome or its worker's missing heartbeat ends at once rather
than at the request's timeout."""

from __future__ import annotations

import asyncio
import json

import redis
import redis.asyncio as aioredis

from gateway.errors import GatewayError
from gateway.relay import Entry, relay_entries


class FakeWatch:
    def __init__(self, finished: Entry | None = None, alive: bool = True) -> None:
        self._finished, self._alive = finished, alive
        self.asked: list[str] = []

    async def finished(self) -> Entry | None:
        self.asked.append("finished")
        return self._finished

    async def worker_alive(self, worker: str) -> bool:
        self.asked.append(worker)
        return self._alive


def _read_all(url: str, key: str, watch: FakeWatch | None, timeout_s: float = 30) -> list[Entry]:
    async def run() -> list[Entry]:
        client = aioredis.from_url(url)
        try:
            return [e async for e in relay_entries(client, key, timeout_s, watch, block_ms=50)]
        finally:
            await client.aclose()

    return asyncio.run(run())


def test_entries_are_read_to_the_end(
    redis_client: redis.Redis, redis_url: str, key_prefix: str
) -> None:
    key = f"{key_prefix}:relay:a"
    redis_client.xadd(key, {"w": "w1@host"})
    redis_client.xadd(key, {"d": b"data: 1\n\n"})
    redis_client.xadd(key, {"end": json.dumps({"usage": {"total_tokens": 3}})})
    entries = _read_all(redis_url, key, FakeWatch())
    assert entries == [("d", b"data: 1\n\n"), ("end", {"usage": {"total_tokens": 3}})]


def test_a_relayed_error_comes_as_the_gateway_error(
    redis_client: redis.Redis, redis_url: str, key_prefix: str
) -> None:
    key = f"{key_prefix}:relay:b"
    error = {"type": "QuotaExhaustedError", "message": "no quota", "status": 429}
    redis_client.xadd(key, {"error": json.dumps(error)})
    ((kind, value),) = _read_all(redis_url, key, None)
    assert kind == "error" and isinstance(value, GatewayError) and value.status == 429


def test_a_task_finished_without_a_relay_entry_ends_the_wait(
    redis_url: str, key_prefix: str
) -> None:
    """A streamed task that failed before its relay began (or whose last write was
    lost): its stored outcome ends the read."""
    outcome: Entry = ("error", GatewayError(500, "internal error", "server_error"))
    entries = _read_all(redis_url, f"{key_prefix}:relay:c", FakeWatch(finished=outcome))
    assert entries == [outcome]


def test_a_worker_gone_mid_answer_ends_the_stream_with_an_error(
    redis_client: redis.Redis, redis_url: str, key_prefix: str
) -> None:
    key = f"{key_prefix}:relay:d"
    redis_client.xadd(key, {"w": "w1@host"})
    redis_client.xadd(key, {"d": b"data: 1\n\n"})
    watch = FakeWatch(alive=False)
    entries = _read_all(redis_url, key, watch)
    assert entries[0] == ("d", b"data: 1\n\n")
    kind, error = entries[1]
    assert kind == "error" and isinstance(error, GatewayError) and error.code == "worker_lost"
    assert "w1@host" in watch.asked


def test_a_running_task_is_waited_for(redis_url: str, key_prefix: str) -> None:
    """No outcome, no worker yet (queued): the wait goes on, to the timeout."""
    watch = FakeWatch()
    try:
        _read_all(redis_url, f"{key_prefix}:relay:e", watch, timeout_s=0.3)
    except GatewayError as exc:
        assert exc.status == 504
    else:
        raise AssertionError("the read ended without an outcome")
    assert watch.asked and set(watch.asked) == {"finished"}

"""workers/relay.py against a real Redis: reads batched by time (the first at once),
the expiry kept up by every write, what a failure tells the reader."""

from __future__ import annotations

import json
import time

import redis

from throttle.errors import QuotaExhaustedError
from throttle.providers.sse import SseEvent
from workers.relay import StreamRelay


def _event(text: str) -> SseEvent:
    data = json.dumps({"choices": [{"delta": {"content": text}}]})
    return SseEvent(None, data, f"data: {data}\n\n".encode())


class Clock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def _entries(client: redis.Redis, key: str) -> list[dict[bytes, bytes]]:
    return [fields for _id, fields in client.xrange(key)]  # type: ignore[union-attr]


def test_the_first_read_goes_at_once_and_later_ones_together(
    redis_client: redis.Redis, key_prefix: str
) -> None:
    clock, key = Clock(), f"{key_prefix}:relay:t1"
    relay = StreamRelay(redis_client, key, keep_usage_chunk=False, clock=clock)
    words = [_event(w) for w in ("one", "two", "three", "four", "five")]
    relay.events(words[:1])
    assert [e[b"d"] for e in _entries(redis_client, key)] == [words[0].raw]
    clock.now_s += 0.01  # within flush_every_s of that write: the next reads wait
    for word in words[1:]:
        relay.events([word])
    assert len(_entries(redis_client, key)) == 1
    relay.end({"completion_tokens": 5})
    entries = _entries(redis_client, key)
    assert [e.get(b"d") for e in entries[:2]] == [words[0].raw, b"".join(w.raw for w in words[1:])]
    assert json.loads(entries[2][b"end"]) == {"usage": {"completion_tokens": 5}}
    assert relay.writes == 2  # five reads and the end: two round trips


def test_a_waiting_read_goes_out_without_a_further_one(
    redis_client: redis.Redis, key_prefix: str
) -> None:
    key = f"{key_prefix}:relay:t2"
    relay = StreamRelay(redis_client, key, keep_usage_chunk=False, flush_every_s=0.05)
    relay.events([_event("one")])
    relay.events([_event("two")])  # waits for a read that never comes
    deadline = time.monotonic() + 10
    while len(_entries(redis_client, key)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    relay.stop()
    assert [e[b"d"] for e in _entries(redis_client, key)] == [
        _event("one").raw,
        _event("two").raw,
    ]


def test_every_write_renews_the_expiry(redis_client: redis.Redis, key_prefix: str) -> None:
    """A stream that runs longer than the TTL must not lose its expiry (nor expire
    under its reader)."""
    clock, key = Clock(), f"{key_prefix}:relay:t3"
    relay = StreamRelay(redis_client, key, keep_usage_chunk=False, ttl_s=60, clock=clock)
    relay.events([_event("one")])
    redis_client.persist(key)
    clock.now_s += 1.0
    relay.events([_event("two")])
    assert 0 < int(redis_client.ttl(key)) <= 60  # type: ignore[arg-type]
    redis_client.persist(key)
    relay.end(None)
    assert 0 < int(redis_client.ttl(key)) <= 60  # type: ignore[arg-type]


def test_a_failure_tells_a_typed_error_and_hides_any_other(
    redis_client: redis.Redis, key_prefix: str
) -> None:
    typed, untyped = f"{key_prefix}:relay:t4", f"{key_prefix}:relay:t5"
    StreamRelay(redis_client, typed, keep_usage_chunk=False).fail(QuotaExhaustedError("no quota"))
    secret = KeyError("sk-live-do-not-show")
    StreamRelay(redis_client, untyped, keep_usage_chunk=False).fail(secret)
    (entry,) = _entries(redis_client, typed)
    assert json.loads(entry[b"error"])["type"] == "QuotaExhaustedError"
    (entry,) = _entries(redis_client, untyped)
    error = json.loads(entry[b"error"])
    assert error["type"] == "InternalError" and "sk-live" not in entry[b"error"].decode()

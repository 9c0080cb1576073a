"""The test harness's servers on ports of their own choosing: a port that another
process takes between the choice and the bind (suites and benchmarks run side by side
on one machine) makes the server try another one, and a server that already listens
there is never mistaken for ours (it answers a PING, or an HTTP GET, too)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest
import redis

from testing import redis_server
from testing.emulator import process as emulator_process

pytestmark = pytest.mark.integration


@pytest.fixture
def other_server() -> Iterator[redis_server.EmbeddedRedis]:
    with redis_server.EmbeddedRedis() as server:
        yield server


def first_choice(port: int) -> Callable[[], int]:
    """A free_port whose first answer is ``port`` (taken by then), then free ones."""
    answers = iter([port])
    real = redis_server.free_port
    return lambda: next(answers, None) or real()


def test_a_redis_server_on_a_taken_port_starts_on_another(
    other_server: redis_server.EmbeddedRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_server, "free_port", first_choice(other_server.port))
    with redis_server.EmbeddedRedis() as ours:
        assert ours.port != other_server.port
        client = redis.Redis.from_url(ours.url)
        assert client.info("server")["process_id"] != other_server._process.pid  # type: ignore[union-attr]
        client.set("mine", 1)
    assert redis.Redis.from_url(other_server.url).get("mine") is None


def test_an_emulator_on_a_taken_port_starts_on_another(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        monkeypatch.setattr(emulator_process, "free_port", first_choice(port))
        emulator = emulator_process.EmulatorProcess()
        try:
            emulator.start()
            assert emulator.port != port
        finally:
            emulator.stop()

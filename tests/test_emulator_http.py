"""The emulator over real HTTP: in-process server on a free port, ``requests`` clients."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from testing.emulator import (
    ClockKind,
    EmulatorConfig,
    EmulatorProcess,
    EmulatorServer,
    LatencyConfig,
    PoolConfig,
    Profile,
    parse_limits_text,
)

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
AUTH = {"Authorization": "Bearer sk-test"}


def _config(**options: Any) -> EmulatorConfig:
    pools = (PoolConfig("default", parse_limits_text("requests=2/s,tokens=1000/s")),)
    return EmulatorConfig(pools=pools, clock=ClockKind.MANUAL, **options)


@pytest.fixture
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(_config()) as running:
        yield running


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as client:
        yield client


def test_routes_of_every_profile(server: EmulatorServer, session: requests.Session) -> None:
    base = server.base_url
    openai = session.post(f"{base}/v1/chat/completions", json=CHAT, headers=AUTH)
    assert openai.status_code == 200
    assert openai.json()["object"] == "chat.completion"
    assert openai.headers["x-ratelimit-remaining-requests"] == "1"
    anthropic = session.post(f"{base}/v1/messages", json=CHAT, headers={"x-api-key": "sk-other"})
    assert anthropic.status_code == 200 and anthropic.json()["type"] == "message"
    session.post(f"{base}/__emu/clock/advance", json={"seconds": 1})  # one org, one pool
    azure = session.post(
        f"{base}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
        json={"messages": CHAT["messages"], "max_tokens": 10},
        headers={"api-key": "sk-third"},
    )
    assert azure.status_code == 200 and "usage" in azure.json()
    gemini = session.post(
        f"{base}/v1beta/models/gemini-2.0-flash:generateContent?key=sk-fourth",
        json={"contents": [{"parts": [{"text": "hi"}]}]},
    )
    assert gemini.status_code == 200 and "usageMetadata" in gemini.json()
    assert session.post(f"{base}/v2/nothing", json={}).status_code == 404


def test_429_then_clock_advance(server: EmulatorServer, session: requests.Session) -> None:
    url = server.base_url + "/v1/chat/completions"
    statuses = [session.post(url, json=CHAT, headers=AUTH).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    advanced = session.post(server.base_url + "/__emu/clock/advance", json={"seconds": 0.5})
    assert advanced.json() == {"now_s": 0.5}
    assert session.post(url, json=CHAT, headers=AUTH).status_code == 200
    stats = session.get(server.base_url + "/__emu/stats").json()
    assert stats["admitted"] == 3
    assert stats["refused"] == {"rate_limit:requests": 1}
    assert stats["early_retries"] == 1  # 0.5 s after a retry-after of 1


def test_control_endpoints(server: EmulatorServer, session: requests.Session) -> None:
    base = server.base_url
    url = base + "/v1/chat/completions"
    faults = session.post(
        base + "/__emu/faults",
        json={"faults": [{"kind": "insufficient_quota", "after_s": 0, "max_hits": 1}]},
    )
    assert faults.status_code == 200 and faults.json()["faults"][0]["hits"] == 0
    quota = session.post(url, json=CHAT, headers=AUTH)
    assert quota.status_code == 429 and quota.json()["error"]["code"] == "insufficient_quota"
    limits = session.post(
        base + "/__emu/limits", json={"pool": "default", "limits": {"tokens": "50/s"}}
    )
    assert limits.json()["limits"]["default"]["tokens"] == "50/1s"
    assert session.post(url, json=CHAT, headers=AUTH).headers["x-ratelimit-limit-tokens"] == "50"
    state = session.get(base + "/__emu/state").json()
    assert state["clock"] == "manual"
    assert state["pools"]["org-emulator/default"]["tokens"]["capacity"] == 50
    assert session.post(base + "/__emu/reset").status_code == 200
    assert session.get(base + "/__emu/stats").json()["requests"] == 0
    bad = session.post(base + "/__emu/faults", json={"faults": [{"kind": "nope"}]})
    assert bad.status_code == 400 and "faults[0].kind" in bad.json()["error"]
    assert session.post(base + "/__emu/faults", json={"clear": True}).json() == {"faults": []}


def test_clock_advance_needs_manual_clock(session: requests.Session) -> None:
    with EmulatorServer(EmulatorConfig()) as real:
        reply = session.post(real.base_url + "/__emu/clock/advance", json={"seconds": 1})
    assert reply.status_code == 400
    assert "clock" in reply.json()["error"]


def test_dropped_connection(session: requests.Session) -> None:
    config = _config()
    with EmulatorServer(config) as running:
        session.post(
            running.base_url + "/__emu/faults",
            json={"kind": "drop_connection", "max_hits": 1},
        )
        with pytest.raises(requests.ConnectionError):
            session.post(running.base_url + "/v1/chat/completions", json=CHAT, headers=AUTH)
        again = session.post(running.base_url + "/v1/chat/completions", json=CHAT, headers=AUTH)
        assert again.status_code == 200


def test_latency_delays_the_response(session: requests.Session) -> None:
    config = _config(latency=LatencyConfig(ttft_ms=200))
    with EmulatorServer(config) as running:
        started = time.monotonic()
        reply = session.post(running.base_url + "/v1/chat/completions", json=CHAT, headers=AUTH)
        elapsed_s = time.monotonic() - started
    assert reply.status_code == 200
    assert reply.headers["openai-processing-ms"] == "200"
    assert 0.19 <= elapsed_s < 2.0


def test_keep_alive_and_pipelining_answer_in_order(server: EmulatorServer) -> None:
    body = b'{"model":"gpt-4o","messages":[],"max_tokens":1}'
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(request * 3)
        received = b""
        while received.count(b"HTTP/1.1 ") < 3 or not received.endswith(b"}"):
            chunk = sock.recv(65536)
            assert chunk, "server closed a keep-alive connection"
            received += chunk
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", received)
    assert statuses == [b"200", b"200", b"429"]


def test_malformed_and_chunked_requests_are_refused(server: EmulatorServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        assert sock.recv(1024).startswith(b"HTTP/1.1 501")


def test_emulator_as_a_subprocess(session: requests.Session) -> None:
    config = EmulatorConfig(
        profile=Profile.ANTHROPIC,
        pools=(PoolConfig("default", parse_limits_text("requests=1/min,input_tokens=1k/min")),),
    )
    with EmulatorProcess(config) as proc:
        url = proc.base_url + "/v1/messages"
        assert session.post(url, json=CHAT).status_code == 200
        limited = session.post(url, json=CHAT)
        assert limited.status_code == 429
        assert limited.headers["retry-after"] == "60"
        assert limited.json()["error"]["type"] == "rate_limit_error"

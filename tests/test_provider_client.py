"""The HTTP client against a tiny scripted HTTP server on 127.0.0.1 (real sockets)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from throttle.errors import (
    ClientRequestError,
    ConfigError,
    OverloadedError,
    ProviderError,
    QuotaExhaustedError,
    RateLimitedError,
    ThrottleError,
    TransportError,
)
from throttle.providers.client import ProviderClient, Timeouts, TransportRetry

KEY = "sk-test-TOPSECRET-9f8e7d6c5b4a"
ENV = {"LLM_THROTTLE_KEY_OPENAI_TEST": KEY, "LLM_THROTTLE_KEY_ANTHROPIC_TEST": KEY}
MESSAGES = [{"role": "user", "content": "Say hi"}]

OK_BODY = {
    "id": "chatcmpl-1",
    "choices": [{"message": {"role": "assistant", "content": "hi"}}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
}
OK_HEADERS = {
    "x-ratelimit-limit-requests": "5000",
    "x-ratelimit-remaining-requests": "4999",
    "x-ratelimit-reset-requests": "12ms",
    "x-ratelimit-limit-tokens": "160000",
    "x-ratelimit-remaining-tokens": "159976",
    "x-ratelimit-reset-tokens": "9ms",
    "x-request-id": "req_abc",
}
TPM_429 = {
    "error": {
        "message": "Rate limit reached for gpt-4o in organization org-X on tokens per min (TPM):"
        " Limit 30000, Used 14567, Requested 24754. Please try again in 18.642s.",
        "type": "tokens",
        "param": None,
        "code": "rate_limit_exceeded",
    }
}
QUOTA_429 = {
    "error": {
        "message": "You exceeded your current quota, please check your plan and billing details.",
        "type": "insufficient_quota",
        "param": None,
        "code": "insufficient_quota",
    }
}


@dataclass
class Reply:
    status: int = 200
    body: object = field(default_factory=lambda: OK_BODY)
    headers: dict[str, str] = field(default_factory=lambda: dict(OK_HEADERS))
    drop: bool = False


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, object]


class ScriptedServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.script: list[Reply] = []
        self.received: list[Received] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def next_reply(self) -> Reply:
        with self.lock:
            return self.script.pop(0) if self.script else Reply()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ScriptedServer

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        with self.server.lock:
            self.server.received.append(Received(self.path, dict(self.headers), body))
        reply = self.server.next_reply()
        if reply.drop:
            # Close the socket without a single byte of answer.
            self.close_connection = True
            return
        payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    srv = ScriptedServer()
    thread = threading.Thread(target=srv.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(server: ScriptedServer, sleeps: list[float]) -> Iterator[ProviderClient]:
    with ProviderClient(
        "openai",
        server.url,
        "openai-test",
        timeouts=Timeouts(connect_s=2, read_s=5),
        retry=TransportRetry(max_attempts=3, initial_wait_s=0.5, max_wait_s=8),
        environ=ENV,
        sleep=sleeps.append,
        clock=lambda: 1_000_000.0,
    ) as c:
        yield c


def assert_no_key(*texts: object) -> None:
    for text in texts:
        assert KEY not in str(text)
        assert KEY not in repr(text)


def test_success_returns_usage_observation_and_sends_the_key(
    client: ProviderClient, server: ScriptedServer
) -> None:
    response = client.complete(model="gpt-4o", messages=MESSAGES, max_tokens=16, temperature=0)
    assert response.status == 200
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (9, 2)
    tokens = response.observation.get("tokens")
    assert tokens is not None and tokens.reset_s == 0.009
    assert response.observation.received_at == 1_000_000.0
    assert response.request_id == "req_abc"
    assert response.attempts == 1 and response.elapsed_s >= 0
    [received] = server.received
    assert received.path == "/v1/chat/completions"
    assert received.headers["authorization"] == f"Bearer {KEY}"
    assert received.body["max_tokens"] == 16 and received.body["temperature"] == 0
    assert_no_key(client, response)


def test_429_is_raised_not_retried_with_wait_and_observation(
    client: ProviderClient, server: ScriptedServer, sleeps: list[float]
) -> None:
    headers = {**OK_HEADERS, "x-ratelimit-remaining-tokens": "0", "retry-after": "19"}
    server.script = [Reply(429, TPM_429, headers)]
    with pytest.raises(RateLimitedError) as info:
        client.complete(model="gpt-4o", messages=MESSAGES, max_tokens=16)
    error = info.value
    assert error.wait_s == 19.0  # retry-after beats the message's 18.642 s
    assert error.dimension == "tokens"
    assert error.observation is not None
    tokens = error.observation.get("tokens")
    assert tokens is not None and tokens.remaining == 0
    assert len(server.received) == 1 and sleeps == []


def test_429_wait_from_the_message(client: ProviderClient, server: ScriptedServer) -> None:
    server.script = [Reply(429, TPM_429, {})]
    with pytest.raises(RateLimitedError) as info:
        client.complete(model="gpt-4o", messages=MESSAGES, max_tokens=16)
    assert info.value.wait_s == pytest.approx(18.642)


def test_insufficient_quota_is_terminal(client: ProviderClient, server: ScriptedServer) -> None:
    server.script = [Reply(429, QUOTA_429, {})]
    with pytest.raises(QuotaExhaustedError) as info:
        client.complete(model="gpt-4o", messages=MESSAGES, max_tokens=16)
    assert info.value.retryable is False
    assert len(server.received) == 1


def test_dropped_connection_is_retried_then_succeeds(
    client: ProviderClient, server: ScriptedServer, sleeps: list[float]
) -> None:
    server.script = [Reply(drop=True), Reply()]
    response = client.complete(model="gpt-4o", messages=MESSAGES, max_tokens=16)
    assert response.status == 200 and response.attempts == 2
    assert len(server.received) == 2
    assert len(sleeps) == 1 and 0.375 <= sleeps[0] <= 0.5


def test_503_is_retried_with_backoff(
    client: ProviderClient, server: ScriptedServer, sleeps: list[float]
) -> None:
    overloaded = {"error": {"message": "overloaded", "code": "server_is_overloaded"}}
    server.script = [Reply(503, overloaded, {}), Reply(503, overloaded, {}), Reply()]
    response = client.complete(model="gpt-4o", messages=MESSAGES, max_tokens=16)
    assert response.attempts == 3
    assert len(sleeps) == 2
    assert 0.375 <= sleeps[0] <= 0.5 and 0.75 <= sleeps[1] <= 1.0


def test_retries_are_bounded_and_surface_the_typed_error(
    client: ProviderClient, server: ScriptedServer, sleeps: list[float]
) -> None:
    server.script = [Reply(drop=True)] * 5
    with pytest.raises(TransportError) as info:
        client.complete(model="gpt-4o", messages=MESSAGES, max_tokens=16)
    assert len(server.received) == 3 and len(sleeps) == 2
    assert "RetryError" not in repr(info.value) and info.value.__cause__ is None
    assert isinstance(info.value, ThrottleError)


def test_529_honours_short_retry_after_and_raises_long_one(
    server: ScriptedServer, sleeps: list[float]
) -> None:
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    client = ProviderClient(
        "anthropic", server.url, "anthropic-test", environ=ENV, sleep=sleeps.append
    )
    server.script = [
        Reply(529, overloaded, {"retry-after": "3"}),
        Reply(body={"usage": {"input_tokens": 3, "output_tokens": 1}}),
    ]
    response = client.complete(model="claude", messages=MESSAGES, max_tokens=8)
    assert response.usage is not None and response.usage.output_tokens == 1
    assert sleeps == [3.0]
    assert server.received[0].headers["x-api-key"] == KEY
    # A retry-after beyond max_wait_s is the throttle's business: raised at once.
    server.script = [Reply(529, overloaded, {"retry-after": "60"})]
    with pytest.raises(OverloadedError) as info:
        client.complete(model="claude", messages=MESSAGES, max_tokens=8)
    assert info.value.wait_s == 60.0 and sleeps == [3.0]
    client.close()


def test_refused_connection_is_a_transport_error(
    server: ScriptedServer, sleeps: list[float]
) -> None:
    # Nothing listens behind this port once the listener is closed: connection refused.
    dead = ScriptedServer()
    url = dead.url
    dead.server_close()
    client = ProviderClient(
        "openai",
        url,
        "openai-test",
        environ=ENV,
        sleep=sleeps.append,
        retry=TransportRetry(max_attempts=2),
    )
    with pytest.raises(TransportError, match="ConnectionError"):
        client.complete(model="gpt-4o", messages=MESSAGES, max_tokens=16)
    assert len(sleeps) == 1


def test_client_errors_are_terminal_and_keys_never_leak(
    client: ProviderClient, server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    # A hostile server echoing the key back in its error message.
    echo = {"error": {"message": f"Incorrect API key provided: {KEY}", "code": "invalid_api_key"}}
    server.script = [Reply(401, echo, {}), Reply(drop=True), Reply(drop=True), Reply(drop=True)]
    errors: list[ProviderError] = []
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(ClientRequestError) as info:
            client.complete(model="gpt-4o", messages=MESSAGES, max_tokens=16)
        errors.append(info.value)
        with pytest.raises(TransportError) as transport:
            client.complete(model="gpt-4o", messages=MESSAGES, max_tokens=16)
        errors.append(transport.value)
    assert "Incorrect API key provided: ****" in str(errors[0])
    assert caplog.records, "retries should have been logged"
    assert_no_key(
        *errors,
        *(e.args for e in errors),
        caplog.text,
        client,
        client.build(model="m", messages=MESSAGES, max_tokens=1),
    )
    for record in caplog.records:
        assert_no_key(record.getMessage())


def test_non_json_success_is_a_transport_error(
    client: ProviderClient, server: ScriptedServer
) -> None:
    server.script = [Reply(body=b"<html>")] * 3
    with pytest.raises(TransportError, match="not a JSON object"):
        client.complete(model="gpt-4o", messages=MESSAGES, max_tokens=16)


def test_missing_credential_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="'openai-nope'"):
        ProviderClient("openai", "http://127.0.0.1:1", "openai-nope", environ={})
    with pytest.raises(ConfigError, match="needs a credential"):
        ProviderClient("openai", "http://127.0.0.1:1", None)
    keyless = ProviderClient("vllm", "http://127.0.0.1:1", None)
    assert (
        "authorization"
        not in keyless.build(model="m", messages=MESSAGES, max_tokens=1).wire_headers()
    )
    with pytest.raises(ConfigError, match="needs a base_url"):
        ProviderClient("vllm", None, None)


def test_concurrent_calls_share_the_pool(client: ProviderClient, server: ScriptedServer) -> None:
    results: list[int] = []

    def call() -> None:
        results.append(client.complete(model="gpt-4o", messages=MESSAGES, max_tokens=4).status)

    threads = [threading.Thread(target=call) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 12

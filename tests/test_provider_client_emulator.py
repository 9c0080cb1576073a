"""The provider client against the running emulator (real HTTP, every profile).

The emulator and the client were written against the same reference, separately; these
tests hold them to each other: what one sends, the other must read the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from testing.emulator import (
    ClockKind,
    EmulatorConfig,
    EmulatorServer,
    FaultConfig,
    FaultKind,
    PoolConfig,
    Profile,
    parse_limits_text,
)
from throttle.errors import (
    ClientRequestError,
    OverloadedError,
    QuotaExhaustedError,
    RateLimitedError,
    RequestTooLargeError,
)
from throttle.providers.client import ProviderClient, TransportRetry
from throttle.providers.credentials import Secret

KEY = "sk-emulator-secret-0123456789"
MESSAGES = [{"role": "user", "content": "Tell me about rate limits."}]
NO_SLEEP = TransportRetry(max_attempts=3, initial_wait_s=0.0, max_wait_s=0.0, max_total_s=5)


def serve(profile: Profile, limits: str, *faults: FaultConfig) -> EmulatorServer:
    config = EmulatorConfig(
        profile=profile,
        pools=(PoolConfig("default", parse_limits_text(limits)),),
        clock=ClockKind.MANUAL,
        faults=faults,
    )
    return EmulatorServer(config)


@pytest.fixture
def openai_server() -> Iterator[EmulatorServer]:
    with serve(Profile.OPENAI, "requests=2/min,tokens=30000/min") as server:
        yield server


def client(server: EmulatorServer, profile: str = "openai") -> ProviderClient:
    return ProviderClient(profile, server.base_url, Secret(KEY), retry=NO_SLEEP)


@pytest.mark.parametrize(
    ("profile", "name", "model"),
    [
        (Profile.OPENAI, "openai", "gpt-4o"),
        (Profile.ANTHROPIC, "anthropic", "claude-sonnet-4"),
        (Profile.AZURE, "azure", "gpt-4o"),
        (Profile.GEMINI, "gemini", "gemini-2.5-flash"),
    ],
)
def test_every_profile_round_trips_usage_and_limit_headers(
    profile: Profile, name: str, model: str
) -> None:
    with serve(profile, "requests=100/min,tokens=100000/min") as server:
        response = client(server, name).complete(model=model, messages=MESSAGES, max_tokens=20)
    assert response.status == 200
    assert response.usage is not None
    assert response.usage.input_tokens > 0
    assert 0 < response.usage.output_tokens <= 20
    if profile is not Profile.GEMINI:  # Gemini sends no limit headers
        requests_state = response.observation.dimensions["requests"]
        assert requests_state.limit is not None and requests_state.remaining is not None


def test_a_429_is_a_rate_limit_error_with_the_emulators_wait(openai_server: EmulatorServer) -> None:
    api = client(openai_server)
    for _ in range(2):
        api.complete(model="gpt-4o", messages=MESSAGES, max_tokens=10)
    with pytest.raises(RateLimitedError) as info:
        api.complete(model="gpt-4o", messages=MESSAGES, max_tokens=10)
    # 2 requests per minute, both used: the next one fits in 30 s.
    assert info.value.wait_s == pytest.approx(30, abs=1)
    assert info.value.dimension == "requests"


def test_request_larger_than_capacity_is_terminal(openai_server: EmulatorServer) -> None:
    with pytest.raises(RequestTooLargeError):
        client(openai_server).complete(model="gpt-4o", messages=MESSAGES, max_tokens=40000)


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        (FaultKind.INSUFFICIENT_QUOTA, QuotaExhaustedError),
        (FaultKind.RATE_LIMIT, RateLimitedError),
        (FaultKind.HUGE_RETRY_AFTER, QuotaExhaustedError),
    ],
)
def test_faults_are_classified(kind: FaultKind, error: type[Exception]) -> None:
    fault = FaultConfig(kind=kind, retry_after_s=3 if kind is FaultKind.RATE_LIMIT else None)
    limits = "requests=100/min,tokens=100000/min"
    with serve(Profile.OPENAI, limits, fault) as server, pytest.raises(error):
        client(server).complete(model="gpt-4o", messages=MESSAGES, max_tokens=10)


def test_anthropic_overload_is_retried_then_surfaces() -> None:
    fault = FaultConfig(kind=FaultKind.OVERLOADED)
    with serve(Profile.ANTHROPIC, "requests=100/min,input_tokens=100000/min", fault) as server:
        api = client(server, "anthropic")
        with pytest.raises(OverloadedError):
            api.complete(model="claude-sonnet-4", messages=MESSAGES, max_tokens=10)
        assert server.emulator.stats()["requests"] == NO_SLEEP.max_attempts


def test_a_dropped_connection_is_retried_and_then_succeeds() -> None:
    fault = FaultConfig(kind=FaultKind.DROP_CONNECTION, max_hits=1)
    with serve(Profile.OPENAI, "requests=100/min,tokens=100000/min", fault) as server:
        response = client(server).complete(model="gpt-4o", messages=MESSAGES, max_tokens=10)
        assert response.status == 200
        assert response.attempts == 2


def test_wrong_model_is_a_client_error(openai_server: EmulatorServer) -> None:
    config = EmulatorConfig(
        pools=(PoolConfig("only", parse_limits_text("requests=9/min"), models=("gpt-4o",)),),
        clock=ClockKind.MANUAL,
    )
    with EmulatorServer(config) as server, pytest.raises(ClientRequestError):
        client(server).complete(model="gpt-9", messages=MESSAGES, max_tokens=10)


def test_no_api_key_in_errors_or_logs(
    openai_server: EmulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    api = client(openai_server)
    seen: list[str] = [repr(api)]
    for _ in range(3):
        try:
            api.complete(model="gpt-4o", messages=MESSAGES, max_tokens=10)
        except RateLimitedError as exc:
            seen += [str(exc), repr(exc), repr(exc.observation)]
    with pytest.raises(RequestTooLargeError) as info:
        api.complete(model="gpt-4o", messages=MESSAGES, max_tokens=40000)
    seen += [str(info.value), repr(info.value)]
    seen += [record.getMessage() for record in caplog.records]
    assert len(seen) > 3
    assert not [text for text in seen if KEY in text]

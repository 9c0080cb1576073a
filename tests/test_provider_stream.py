"""``ProviderClient.stream`` against the emulator's streamed answers: events passed on as
they arrive, the usage tallied; a 429 before the first byte is the throttle's as
ever; a stream cut after events went out is StreamBrokenError."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from testing.emulator import EmulatorConfig, EmulatorServer, FaultConfig
from throttle.errors import RateLimitedError, StreamBrokenError
from throttle.providers.client import ProviderClient, TransportRetry
from throttle.providers.credentials import Secret
from throttle.providers.sse import SseEvent

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "user", "content": "hello there"}]


def _server(profile: str, tokens_per_s: float = 200.0) -> EmulatorServer:
    config = EmulatorConfig.from_mapping(
        {"profile": profile, "latency": {"ttft_ms": 10, "tokens_per_s": tokens_per_s}}
    )
    return EmulatorServer(config)


@pytest.mark.parametrize(
    ("profile", "model", "last"), [("openai", "gpt-4o-mini", "[DONE]"), ("anthropic", "c", "")]
)
def test_events_pass_as_they_arrive_and_add_up_to_the_body(
    profile: str, model: str, last: str
) -> None:
    reads: list[Sequence[SseEvent]] = []
    with _server(profile) as server:
        client = ProviderClient(profile, server.base_url, Secret("k"))
        request = client.build(model=model, messages=MESSAGES, max_tokens=60)
        response = client.stream(request, reads.append)
        stats = server.emulator.stats()
    events = [event for read in reads for event in read]
    assert len(reads) >= 5  # the words came over the generation time, read by read
    assert stats["streams"] == {"started": 1, "finished": 1, "open": 0}
    assert response.usage is not None and response.usage.output_tokens >= 12
    text = response.body["choices"][0]["message"]["content"] if profile == "openai" else (
        response.body["content"][0]["text"]  # type: ignore[index]
    )  # fmt: skip
    assert text == "This is an emulated completion."
    if last:
        assert events[-1].data == last
    else:
        assert events[-1].event == "message_stop"


def test_a_429_before_the_first_byte_is_raised_with_nothing_passed_on() -> None:
    reads: list[Sequence[SseEvent]] = []
    with _server("openai") as server:
        client = ProviderClient("openai", server.base_url, Secret("k"))
        fault = FaultConfig.from_mapping({"kind": "rate_limit", "retry_after_s": 2}, "f")
        server.emulator.add_faults([fault])
        request = client.build(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)
        with pytest.raises(RateLimitedError) as caught:
            client.stream(request, reads.append)
    assert caught.value.wait_s == 2 and reads == []


def test_a_stream_cut_after_events_went_out_is_broken_not_retried() -> None:
    reads: list[Sequence[SseEvent]] = []
    server = _server("openai", tokens_per_s=20)  # ~1-3 s of generation
    server.start_in_thread()
    try:
        client = ProviderClient(
            "openai", server.base_url, Secret("k"), retry=TransportRetry(max_attempts=3)
        )

        def cut_after_first(events: Sequence[SseEvent]) -> None:
            reads.append(events)
            server.stop()  # the server goes away mid-answer

        request = client.build(model="gpt-4o-mini", messages=MESSAGES, max_tokens=60)
        with pytest.raises(StreamBrokenError):
            client.stream(request, cut_after_first)
    finally:
        server.stop()
    assert len(reads) == 1  # one attempt: nothing was sent again

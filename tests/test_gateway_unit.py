"""The gateway's pure parts: keys, request translation, errors, backpressure turns; the
stream parser and tally; the emulator's stream schedule. No sockets, no sleeping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.backpressure import Backpressure, retry_after_s, retry_headers
from gateway.errors import GatewayError, from_exception, from_relayed
from gateway.settings import gateway_settings, key_digest
from gateway.translate import (
    ANTHROPIC,
    OPENAI,
    ModelIndex,
    chat_request,
    decode_body,
    max_wait_s,
    presented_key,
)
from testing.emulator.profiles.streams import schedule
from throttle.config import config_from_dict
from throttle.errors import (
    ClientRequestError,
    ConfigError,
    CostExceedsCapacityError,
    QuotaExhaustedError,
    StorageError,
    UnknownGroupError,
)
from throttle.limiter import StartWait
from throttle.providers.registry import get_profile
from throttle.providers.sse import SseParser
from throttle.providers.streaming import StreamTally, is_usage_only, streaming_request

CONFIG = {
    "providers": {
        "oa": {"profile": "openai", "base_url": "http://127.0.0.1:1"},
        "an": {"profile": "anthropic", "base_url": "http://127.0.0.1:1"},
        "gm": {"profile": "gemini", "base_url": "http://127.0.0.1:1"},
    },
    "groups": {
        "oa:g": {"provider": "oa", "models": ["gpt-x"], "requests": "10/s"},
        "an:g": {"provider": "an", "models": ["claude-x"], "requests": "10/s"},
        "gm:g": {"provider": "gm", "models": ["gemini-x"], "requests": "10/s"},
    },
}


# -- keys -------------------------------------------------------------------------


def test_keys_are_kept_as_digests_and_looked_up_by_the_presented_key(tmp_path: Path) -> None:
    secrets = tmp_path / "keys.toml"
    secrets.write_text('[keys]\n"plain-key-b" = { tenant = "beta", lane = "batch" }\n')
    settings = gateway_settings(
        {"keys": {key_digest("key-a"): {"tenant": "acme"}}, "keys_file": str(secrets)}
    )
    assert settings.grant_for("key-a") is not None
    assert settings.grant_for("key-a").tenant == "acme"  # type: ignore[union-attr]
    grant_b = settings.grant_for("plain-key-b")
    assert grant_b is not None and (grant_b.tenant, grant_b.lane) == ("beta", "batch")
    assert settings.grant_for("key-c") is None
    assert settings.grant_for(None) is None
    assert "plain-key-b" not in repr(settings) and all(
        k.startswith("sha256:") for k in settings.keys
    )


def test_a_bad_key_entry_names_its_position_not_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        gateway_settings({"keys": {"secret-value": {"tenant": 3}}})
    assert "secret-value" not in str(caught.value) and "gateway.keys[0]" in str(caught.value)
    with pytest.raises(ConfigError, match="unknown key"):
        gateway_settings({"port": 1, "colour": "red"})


def test_the_caller_key_comes_from_bearer_or_x_api_key() -> None:
    assert presented_key({"authorization": "Bearer abc"}) == "abc"
    assert presented_key({"x-api-key": "xyz"}) == "xyz"
    assert presented_key({}) is None


# -- translation ------------------------------------------------------------------


def test_each_model_is_served_on_its_providers_api_and_gemini_on_none() -> None:
    index = ModelIndex.build(config_from_dict(CONFIG))
    assert index.provider_for(OPENAI, "gpt-x") == "oa"
    assert index.provider_for(ANTHROPIC, "claude-x") == "an"
    for api, model in ((OPENAI, "claude-x"), (ANTHROPIC, "gpt-x"), (OPENAI, "gemini-x")):
        with pytest.raises(GatewayError) as caught:
            index.provider_for(api, model)
        assert caught.value.status == 404 and caught.value.code == "model_not_found"


def test_a_body_becomes_the_tasks_arguments_and_every_other_field_a_parameter() -> None:
    index = ModelIndex.build(config_from_dict(CONFIG))
    body = {
        "model": "gpt-x",
        "messages": [{"role": "user", "content": "hi"}],
        "max_completion_tokens": 30,
        "temperature": 0.2,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    chat = chat_request(OPENAI, body, index)
    assert (chat.provider, chat.model, chat.stream) == ("oa", "gpt-x", True)
    assert (chat.max_tokens, chat.max_completion_tokens) == (None, 30)
    assert chat.params == {"temperature": 0.2, "stream_options": {"include_usage": True}}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "a"}]}, "model"),
        ({"model": "gpt-x"}, "messages"),
        ({"model": "gpt-x", "messages": []}, "messages"),
        ({"model": "gpt-x", "messages": ["a"]}, "messages"),
        ({"model": "gpt-x", "messages": [{}], "max_tokens": "9"}, "max_tokens"),
        ({"model": "gpt-x", "messages": [{}], "stream": "yes"}, "stream"),
    ],
)
def test_malformed_bodies_are_400_naming_the_parameter(body: dict[str, object], param: str) -> None:
    index = ModelIndex.build(config_from_dict(CONFIG))
    with pytest.raises(GatewayError) as caught:
        chat_request(OPENAI, body, index)
    assert (caught.value.status, caught.value.param) == (400, param)


def test_only_a_json_object_is_a_body() -> None:
    assert decode_body(b'{"a": 1}') == {"a": 1}
    for raw in (b"{bad", b"[1]", b"\xff"):
        with pytest.raises(GatewayError) as caught:
            decode_body(raw)
        assert caught.value.status == 400


def test_the_max_wait_header_overrides_the_default_and_must_be_a_number() -> None:
    assert max_wait_s({}, 30.0) == 30.0
    assert max_wait_s({"x-throttle-max-wait-s": "2.5"}, 30.0) == 2.5
    for bad in ("soon", "-1", "nan"):
        with pytest.raises(GatewayError):
            max_wait_s({"x-throttle-max-wait-s": bad}, 30.0)


# -- errors -----------------------------------------------------------------------


def test_errors_take_the_shape_of_the_callers_api() -> None:
    error = GatewayError(401, "Incorrect API key provided.", code="invalid_api_key")
    assert error.openai_body() == {
        "error": {
            "message": "Incorrect API key provided.",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
    assert error.anthropic_body() == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "Incorrect API key provided."},
    }


def test_typed_errors_map_onto_statuses() -> None:
    assert from_exception(UnknownGroupError("x")).status == 404
    assert from_exception(CostExceedsCapacityError("g", "tokens", 9.0, 1.0)).status == 400
    assert from_exception(QuotaExhaustedError("q", status=429)).status == 429
    assert from_exception(StorageError("down")).status == 503
    assert from_exception(TimeoutError()).status == 504
    assert from_exception(RuntimeError("secret detail")).message == "internal error"
    relayed = from_relayed({"type": "ClientRequestError", "message": "bad", "status": 422})
    assert relayed.status == 422
    assert from_relayed({"type": "StreamBrokenError", "message": "cut"}).status == 502
    assert from_relayed({"type": "RateLimitedError", "message": "slow down"}).status == 429


def test_an_untyped_relayed_error_is_an_internal_one() -> None:
    for kind in ("InternalError", "KeyError", "os"):
        error = from_relayed({"type": kind, "message": "sk-live-secret", "status": 401})
        assert (error.status, error.message) == (500, "internal error")


def test_a_provider_refusing_the_workers_key_is_not_the_callers_401() -> None:
    """A 401 would tell the caller's SDK that its gateway key is wrong."""
    refused = ClientRequestError("invalid x-api-key", status=401)
    assert from_exception(refused).status == 502
    relayed = from_relayed({"type": "ClientRequestError", "message": "no", "status": 403})
    assert (relayed.status, relayed.code) == (502, "upstream_auth_error")
    not_found = from_exception(ClientRequestError("no such model", status=404))
    assert not_found.status == 404


# -- backpressure -----------------------------------------------------------------


def test_retry_after_is_the_time_until_the_start_comes_within_the_wait() -> None:
    start = StartWait(bucket_wait_s=0.5, queued=40, per_item_s=0.1)
    assert start.expected_s == pytest.approx(4.5)
    assert retry_after_s(start, 2.0, 0) == pytest.approx(2.5)
    assert retry_after_s(start, 2.0, 10) == pytest.approx(3.5)
    assert retry_after_s(StartWait(0.1, 0, 0.1), 0.0, 0) == 1.0  # never under a second
    assert retry_headers(2.25) == {"retry-after": "3", "retry-after-ms": "2250"}


def test_callers_refused_together_get_successive_turns() -> None:
    now = [100.0]
    gate = Backpressure(config_from_dict(CONFIG), limiter=None, client=None, clock=lambda: now[0])  # type: ignore[arg-type]
    start = StartWait(bucket_wait_s=0.0, queued=50, per_item_s=0.1)
    waits = [gate.refuse("g", start, max_wait_s=2.0) for _ in range(5)]
    assert waits == pytest.approx([3.0, 3.1, 3.2, 3.3, 3.4])
    now[0] += 10.0  # every turn has passed
    assert gate.refuse("g", start, max_wait_s=2.0) == pytest.approx(3.0)


def test_a_burst_read_before_its_tasks_show_counts_what_was_sent() -> None:
    """Callers that all read an empty group: the ones sent are ahead of the next."""
    now = [0.0]
    gate = Backpressure(config_from_dict(CONFIG), limiter=None, client=None, clock=lambda: now[0])  # type: ignore[arg-type]
    idle = StartWait(bucket_wait_s=0.0, queued=0, per_item_s=0.1)
    answers = [gate.refuse("g", idle, max_wait_s=1.0) for _ in range(15)]
    assert answers[:11] == [None] * 11  # starts at 0.0, 0.1, ... 1.0 s
    assert answers[11:] == [1.0] * 4  # never under a second
    now[0] = 5.0  # they have all started
    assert gate.refuse("g", idle, max_wait_s=1.0) is None


# -- streams ----------------------------------------------------------------------


def test_the_parser_splits_events_across_reads_and_keeps_their_bytes() -> None:
    parser = SseParser()
    assert parser.feed(b'event: message_start\ndata: {"a"') == []
    events = parser.feed(b": 1}\n\n: comment\n\ndata: [DONE]\r\n\r\ndata: x")
    assert [(e.event, e.data) for e in events] == [("message_start", '{"a": 1}'), (None, "[DONE]")]
    assert events[0].raw == b'event: message_start\ndata: {"a": 1}\n\n'
    assert parser.pending == b"data: x"


def test_a_streamed_request_always_asks_openai_for_the_usage() -> None:
    profile = get_profile("openai")
    request = profile.build_request(
        base_url="http://h", model="m", messages=[{"role": "user", "content": "a"}],
        max_tokens=5, params={"stream_options": {"x": 1}}, api_key=None,
    )  # fmt: skip
    body = streaming_request(profile, request).json
    assert body["stream"] is True and body["stream_options"] == {"x": 1, "include_usage": True}


def _events(*payloads: tuple[str | None, object]) -> list[bytes]:
    out = []
    for event, data in payloads:
        head = f"event: {event}\n" if event else ""
        text = data if isinstance(data, str) else json.dumps(data)
        out.append(f"{head}data: {text}\n\n".encode())
    return out


def test_the_tally_adds_openai_chunks_up_to_the_unstreamed_body() -> None:
    tally, parser = StreamTally(get_profile("openai")), SseParser()
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    raw = _events(
        (None, {"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"content": "Hi "}}]}),
        (None, {"choices": [{"index": 0, "delta": {"content": "there"}, "finish_reason": "stop"}]}),
        (None, {"choices": [], "usage": usage}),
        (None, "[DONE]"),
    )
    events = parser.feed(b"".join(raw))
    for event in events:
        tally.add(event)
    body = tally.body()
    assert tally.done and body["choices"][0]["message"]["content"] == "Hi there"
    assert get_profile("openai").parse_usage(body).output_tokens == 2  # type: ignore[union-attr]
    assert [is_usage_only(e) for e in events] == [False, False, True, False]


def test_the_tally_reads_anthropic_usage_from_start_and_delta() -> None:
    tally, parser = StreamTally(get_profile("anthropic")), SseParser()
    start = {"id": "m", "usage": {"input_tokens": 7, "output_tokens": 1}}
    text = {"type": "text_delta", "text": "ok"}
    delta = {"stop_reason": "end_turn"}
    raw = _events(
        ("message_start", {"type": "message_start", "message": start}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": text}),
        ("message_delta", {"type": "message_delta", "delta": delta, "usage": {"output_tokens": 4}}),
        ("message_stop", {"type": "message_stop"}),
    )
    for event in parser.feed(b"".join(raw)):
        tally.add(event)
    usage = get_profile("anthropic").parse_usage(tally.body())
    assert tally.done and usage is not None and (usage.input_tokens, usage.output_tokens) == (7, 4)


def test_the_emulator_spreads_content_over_the_generation_time() -> None:
    events = [("start", b"s"), ("content", b"a"), ("content", b"b"), ("end", b"e")]
    assert schedule(events, 0.1, 1.0) == ((0.1, b"s"), (0.1, b"a"), (0.6, b"b"), (1.1, b"e"))


def test_a_failure_after_events_is_an_error_event_in_the_callers_shape() -> None:
    """Both SDKs raise on an ``error`` event; each reads its own API's body."""
    error = GatewayError(502, "the stream broke", "server_error", "upstream_error")
    openai_event, anthropic_event = error.sse_event(False), error.sse_event(True)
    assert openai_event.startswith(b"event: error\ndata: ") and openai_event.endswith(b"\n\n")
    assert json.loads(openai_event.split(b"data: ", 1)[1])["error"]["code"] == "upstream_error"
    body = json.loads(anthropic_event.split(b"data: ", 1)[1])
    assert body == {"type": "error", "error": {"type": "api_error", "message": "the stream broke"}}

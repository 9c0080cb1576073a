"""Profiles: request building, usage normalisation, admission costs and settlement."""

from __future__ import annotations

import dataclasses
import json

import pytest

from throttle.errors import InvalidRequestError, UnknownGroupError
from throttle.providers.accounting import (
    InputOnlyTokens,
    SplitTokens,
    UpfrontTokens,
    rejected_deltas,
    restrict,
)
from throttle.providers.anthropic import AnthropicProfile
from throttle.providers.credentials import Secret
from throttle.providers.openai import AzureOpenAIProfile
from throttle.providers.registry import get_profile, profile_names
from throttle.providers.usage import Usage

KEY = Secret("sk-test-0123456789abcdef")
MESSAGES: list[dict[str, object]] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi"},
    {"role": "user", "content": [{"type": "text", "text": "Again"}]},
]


def test_registry_names_and_aliases() -> None:
    assert {"openai", "azure", "anthropic", "gemini", "openai-compatible", "groq"} <= set(
        profile_names()
    )
    assert get_profile("Azure-OpenAI") is get_profile("azure")
    assert get_profile("vllm") is get_profile("openai-compatible")
    with pytest.raises(UnknownGroupError, match=r"unknown provider profile 'mistral'.*openai"):
        get_profile("mistral")


def test_openai_request() -> None:
    request = get_profile("openai").build_request(
        base_url="http://127.0.0.1:9000/",
        model="gpt-4o",
        messages=MESSAGES,
        max_tokens=64,
        params={"temperature": 0.2, "n": 2},
        api_key=KEY,
    )
    assert request.method == "POST"
    assert request.url == "http://127.0.0.1:9000/v1/chat/completions"
    assert request.json["max_tokens"] == 64 and request.json["n"] == 2
    assert request.json["messages"] == MESSAGES
    assert request.wire_headers()["authorization"] == "Bearer " + KEY.reveal()
    assert KEY.reveal() not in repr(request) and "Hello" not in repr(request)
    assert "authorization" not in request.headers


def test_azure_request() -> None:
    profile = AzureOpenAIProfile(deployments={"gpt-4o": "prod gpt4o"}, api_version="2024-10-21")
    request = profile.build_request(
        base_url="https://res.openai.azure.com",
        model="gpt-4o",
        messages=MESSAGES,
        max_tokens=10,
        params={},
        api_key=KEY,
    )
    assert request.url == (
        "https://res.openai.azure.com/openai/deployments/prod%20gpt4o/chat/completions"
        "?api-version=2024-10-21"
    )
    assert request.wire_headers()["api-key"] == KEY.reveal()


def test_anthropic_request_moves_system_messages() -> None:
    request = get_profile("anthropic").build_request(
        base_url="https://api.anthropic.com",
        model="claude-sonnet-4",
        messages=MESSAGES,
        max_tokens=100,
        params={"temperature": 0},
        api_key=KEY,
    )
    assert request.url == "https://api.anthropic.com/v1/messages"
    assert request.json["system"] == "Be brief."
    assert [m["role"] for m in request.json["messages"]] == ["user", "assistant", "user"]  # type: ignore[attr-defined]
    assert request.json["max_tokens"] == 100
    wire = request.wire_headers()
    assert wire["x-api-key"] == KEY.reveal()
    assert wire["anthropic-version"] == "2023-06-01"


def test_gemini_request() -> None:
    request = get_profile("gemini").build_request(
        base_url="https://generativelanguage.googleapis.com",
        model="gemini-2.0-flash",
        messages=MESSAGES,
        max_tokens=50,
        params={"temperature": 0.5, "top_p": 0.9, "safetySettings": []},
        api_key=KEY,
    )
    assert request.url.endswith("/v1beta/models/gemini-2.0-flash:generateContent")
    assert "key=" not in request.url
    body = request.json
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Hello"}]},
        {"role": "model", "parts": [{"text": "Hi"}]},
        {"role": "user", "parts": [{"text": "Again"}]},
    ]
    assert body["generationConfig"] == {"maxOutputTokens": 50, "temperature": 0.5, "topP": 0.9}
    assert body["safetySettings"] == []
    assert request.wire_headers()["x-goog-api-key"] == KEY.reveal()


def test_keyless_compatible_server_sends_no_auth() -> None:
    request = get_profile("vllm").build_request(
        base_url="http://localhost:8000",
        model="llama",
        messages=MESSAGES[1:2],
        max_tokens=5,
        params={},
        api_key=None,
    )
    assert "authorization" not in request.wire_headers()


@pytest.mark.parametrize(
    ("messages", "max_tokens", "params"),
    [
        ([], 10, {}),
        ("hello", 10, {}),
        ([{"content": "no role"}], 10, {}),
        ([{"role": "user", "content": 3}], 10, {}),
        (MESSAGES, 0, {}),
        (MESSAGES, True, {}),
        (MESSAGES, 10, {"model": "other"}),
        (MESSAGES, 10, {"stream": True}),
        (MESSAGES, 10, {"n": 0}),
    ],
)
def test_malformed_requests_are_rejected(
    messages: object, max_tokens: object, params: dict[str, object]
) -> None:
    profile = get_profile("openai")
    with pytest.raises(InvalidRequestError):
        request = profile.build_request(
            base_url="http://x",
            model="m",
            messages=messages,  # type: ignore[arg-type]
            max_tokens=max_tokens,  # type: ignore[arg-type]
            params=params,
            api_key=KEY,
        )
        profile.reserve(input_tokens=1, max_tokens=request.json["max_tokens"], params=params)  # type: ignore[arg-type]


def test_usage_normalisation() -> None:
    openai_body = {
        "usage": {
            "prompt_tokens": 120,
            "completion_tokens": 30,
            "prompt_tokens_details": {"cached_tokens": 100},
        }
    }
    assert get_profile("openai").parse_usage(openai_body) == Usage(120, 30, 100)
    anthropic_body = {
        "usage": {
            "input_tokens": 20,
            "cache_creation_input_tokens": 50,
            "cache_read_input_tokens": 100,
            "output_tokens": 7,
        }
    }
    assert get_profile("anthropic").parse_usage(anthropic_body) == Usage(170, 7, 100, 50)
    gemini_body = {
        "usageMetadata": {
            "promptTokenCount": 11,
            "candidatesTokenCount": 4,
            "thoughtsTokenCount": 6,
        }
    }
    assert get_profile("gemini").parse_usage(gemini_body) == Usage(11, 10)
    for garbage in (
        None,
        {},
        {"usage": "x"},
        {"usage": {"prompt_tokens": -1, "completion_tokens": 1}},
        {"usage": {"prompt_tokens": True, "completion_tokens": 1}},
    ):
        assert get_profile("openai").parse_usage(garbage) is None


def test_openai_admission_charges_prompt_plus_n_max_tokens() -> None:
    reservation = get_profile("openai").reserve(input_tokens=500, max_tokens=200, params={"n": 3})
    assert dict(reservation.costs) == {
        "requests": 1,
        "requests_day": 1,
        "tokens": 1100,
        "tokens_day": 1100,
    }
    assert restrict(reservation.costs, ["requests", "tokens"]) == {"requests": 1, "tokens": 1100}


def test_azure_admission_counts_best_of() -> None:
    profile = get_profile("azure")
    assert (
        profile.reserve(input_tokens=100, max_tokens=50, params={"best_of": 4}).costs["tokens"]
        == 300
    )
    assert profile.reserve(input_tokens=100, max_tokens=50, params={"n": 2}).costs["tokens"] == 200


def test_openai_settle_never_refunds_unused_max_tokens() -> None:
    profile = get_profile("openai")
    reservation = profile.reserve(input_tokens=500, max_tokens=200)
    # Prompt over-estimated by 50, output used 40 of 200: only the prompt error is trued up.
    assert profile.settle(reservation, Usage(450, 40)) == {"tokens": -50, "tokens_day": -50}
    # Prompt under-estimated: debit the difference.
    assert profile.settle(reservation, Usage(530, 200)) == {"tokens": 30, "tokens_day": 30}
    # No usage (failed after admission): keep everything, as the provider does.
    assert profile.settle(reservation, None) == {}


def test_refunding_compatible_server() -> None:
    accounting = UpfrontTokens(output="settle")
    reservation = accounting.reserve(input_tokens=100, output_tokens=200)
    assert accounting.settle(reservation, Usage(100, 40))["tokens"] == -160


def test_anthropic_reserves_output_and_settles_it_by_default() -> None:
    """Anthropic charges output as it is generated; the throttle reserves max_tokens so
    that requests admitted together cannot overrun the output limit, and gives the
    unused part back at the end."""
    profile = get_profile("anthropic")
    reservation = profile.reserve(input_tokens=1000, max_tokens=4096)
    assert dict(reservation.costs) == {
        "requests": 1,
        "input_tokens": 1000,
        "output_tokens": 4096,
        "tokens": 5096,
    }
    # 900 uncached + 200 cache creation + 5000 cache reads (not counted), 300 output.
    usage = Usage(6100, 300, cache_read_input_tokens=5000, cache_creation_input_tokens=200)
    assert profile.settle(reservation, usage) == {
        "input_tokens": 100,
        "output_tokens": -3796,
        "tokens": -3696,
    }


def test_anthropic_realtime_mode_debits_output_at_the_end() -> None:
    profile = dataclasses.replace(
        AnthropicProfile(), accounting=SplitTokens().with_output("realtime")
    )
    reservation = profile.reserve(input_tokens=1000, max_tokens=4096)
    assert reservation.costs["output_tokens"] == 0
    assert profile.settle(reservation, Usage(1000, 300))["output_tokens"] == 300


def test_reserve_mode_never_refunds_output() -> None:
    profile = dataclasses.replace(
        AnthropicProfile(),
        accounting=SplitTokens(output="reserve", count_cache_reads=True),
    )
    reservation = profile.reserve(input_tokens=1000, max_tokens=4096)
    assert reservation.costs["output_tokens"] == 4096
    usage = Usage(1500, 96, cache_read_input_tokens=500)
    assert profile.settle(reservation, usage) == {
        "input_tokens": 500,
        "output_tokens": 0,
        "tokens": 500,
    }
    openai = UpfrontTokens().with_output("realtime")
    assert openai.reserve(input_tokens=10, output_tokens=90).costs["tokens"] == 10


def test_a_provider_that_does_not_limit_output_has_no_output_mode() -> None:
    with pytest.raises(ValueError, match="output"):
        InputOnlyTokens().with_output("settle")


def test_gemini_counts_input_only() -> None:
    profile = get_profile("gemini")
    assert isinstance(profile.accounting, InputOnlyTokens)
    reservation = profile.reserve(input_tokens=300, max_tokens=8000)
    assert reservation.costs["tokens"] == 300
    assert profile.settle(reservation, Usage(280, 7000)) == {"tokens": -20, "tokens_day": -20}


def test_rejected_request_keeps_the_request_refunds_tokens() -> None:
    reservation = get_profile("openai").reserve(input_tokens=100, max_tokens=100)
    assert rejected_deltas(reservation) == {"tokens": -200, "tokens_day": -200}


def test_reservation_is_plain_data() -> None:
    reservation = get_profile("anthropic").reserve(input_tokens=10, max_tokens=10)
    data = dataclasses.asdict(reservation)
    assert json.loads(json.dumps(data))["costs"]["input_tokens"] == 10


def test_observation_and_reservation_pickle() -> None:
    import pickle

    from throttle.providers.observation import DimensionState, Observation

    observation = Observation(1.0, {"tokens": DimensionState(10, 5, 1.0)}, 2.0)
    assert pickle.loads(pickle.dumps(observation)) == observation
    reservation = get_profile("openai").reserve(input_tokens=1, max_tokens=1)
    assert pickle.loads(pickle.dumps(reservation)) == reservation

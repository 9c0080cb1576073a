"""The emulator engine without sockets: a manual clock, exact headers and bodies."""

from __future__ import annotations

import json
from typing import Any

import pytest

from testing.emulator import (
    CompletionRequest,
    Deferred,
    Emulator,
    EmulatorConfig,
    FaultConfig,
    FaultKind,
    LatencyConfig,
    ManualClock,
    OutputMode,
    PoolConfig,
    Profile,
    Reply,
    parse_limits_text,
)

#: 2025-02-24T22:25:47Z, the Anthropic header sample's date.
WALL_EPOCH_S = 1740435947.0


def make(
    limits: str = "requests=5000/min,tokens=160000/min",
    profile: Profile = Profile.OPENAI,
    **options: Any,
) -> tuple[Emulator, ManualClock]:
    clock = ManualClock()
    pools = (PoolConfig("default", parse_limits_text(limits)),)
    config = EmulatorConfig(profile=profile, pools=pools, **options)
    return Emulator(config, clock=clock, wall_epoch_s=WALL_EPOCH_S), clock


def body(
    profile: Profile = Profile.OPENAI,
    *,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    max_tokens: int | None = 1,
    model: str = "gpt-4o",
) -> dict[str, Any]:
    """A request body; ``input_tokens``/``output_tokens`` script the usage."""
    script = {
        k: v
        for k, v in (("input_tokens", input_tokens), ("output_tokens", output_tokens))
        if v is not None
    }
    data: dict[str, Any]
    if profile is Profile.GEMINI:
        data = {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}
        if max_tokens is not None:
            data["generationConfig"] = {"maxOutputTokens": max_tokens}
    else:
        data = {"model": model, "messages": [{"role": "user", "content": "hello"}]}
        if max_tokens is not None:
            data["max_tokens"] = max_tokens
    if script:
        data["emulator"] = script
    return data


def send(
    emu: Emulator,
    data: dict[str, Any],
    *,
    profile: Profile = Profile.OPENAI,
    key: str = "sk-a",
    headers: dict[str, str] | None = None,
) -> Reply:
    all_headers = {"authorization": f"Bearer {key}", **(headers or {})}
    path_model = "gpt-4o" if profile in (Profile.AZURE, Profile.GEMINI) else None
    request = CompletionRequest(profile, all_headers, json.dumps(data).encode(), path_model)
    result = emu.complete(request)
    return result.complete() if isinstance(result, Deferred) else result


def error_message(reply: Reply) -> str:
    return str(reply.json()["error"]["message"])


# ------------------------------------------------------------------ OpenAI profile


def test_openai_headers_reset_arithmetic() -> None:
    emu, _ = make()
    reply = send(emu, body(input_tokens=23, max_tokens=1))
    assert reply.status == 200
    assert reply.header("x-ratelimit-limit-requests") == "5000"
    assert reply.header("x-ratelimit-remaining-requests") == "4999"
    assert reply.header("x-ratelimit-reset-requests") == "12ms"
    assert reply.header("x-ratelimit-limit-tokens") == "160000"
    assert reply.header("x-ratelimit-remaining-tokens") == "159976"
    assert reply.header("x-ratelimit-reset-tokens") == "9ms"
    assert reply.header(
        "x-request-id",
    ).startswith("req_")  # type: ignore[union-attr]
    assert reply.header("openai-processing-ms") == "0"


def test_openai_binding_bucket_is_the_longest_to_full() -> None:
    emu, _ = make("requests=100/min,tokens=300000/min,tokens_day=1500000/day")
    reply = send(emu, body(input_tokens=9999, max_tokens=1))
    assert reply.header("x-ratelimit-limit-tokens") == "1500000"
    assert reply.header("x-ratelimit-remaining-tokens") == "1490000"
    assert reply.header("x-ratelimit-reset-tokens") == "9m36s"


def test_openai_429_message_of_the_18_642_s_sample() -> None:
    emu, _ = make("requests=1000/min,tokens=30000/min")
    assert send(emu, body(input_tokens=14566, max_tokens=1)).status == 200
    reply = send(emu, body(input_tokens=24753, max_tokens=1))
    assert reply.status == 429
    assert reply.header("retry-after") == "19"
    error = reply.json()["error"]
    assert error["type"] == "tokens"
    assert error["code"] == "rate_limit_exceeded"
    assert error["param"] is None
    assert error["message"] == (
        "Rate limit reached for gpt-4o in organization org-emulator on tokens per min (TPM):"
        " Limit 30000, Used 14567, Requested 24754. Please try again in 18.642s."
        " Visit https://platform.openai.com/account/rate-limits to learn more."
    )
    # No token debit; count_rejected (OpenAI default) took one request.
    assert reply.header("x-ratelimit-remaining-tokens") == "15433"
    assert reply.header("x-ratelimit-remaining-requests") == "998"


def test_openai_requests_429_matches_the_rpm_sample() -> None:
    emu, _ = make("requests=3/min,tokens=100000/min")
    for _ in range(3):
        assert send(emu, body()).status == 200
    reply = send(emu, body())
    assert reply.json()["error"]["type"] == "requests"
    assert "Limit 3, Used 3, Requested 1. Please try again in 20s." in error_message(reply)
    assert reply.header("retry-after") == "20"


def test_request_larger_than_capacity_is_terminal_without_debit() -> None:
    emu, _ = make("requests=100/min,tokens=30000/min")
    reply = send(emu, body(input_tokens=30600, max_tokens=1))
    assert reply.status == 429
    assert reply.header("retry-after") is None
    assert error_message(reply).startswith(
        "Request too large for gpt-4o in organization org-emulator on tokens per min (TPM):"
        " Limit 30000, Requested 30601. The input or output tokens must be reduced"
    )
    assert reply.header("x-ratelimit-remaining-tokens") == "30000"
    assert reply.header("x-ratelimit-remaining-requests") == "100"
    assert emu.stats()["refused"] == {"too_large:tokens": 1}


def test_missing_max_tokens_costs_the_configured_default() -> None:
    emu, _ = make(default_max_tokens=1000)
    reply = send(emu, body(input_tokens=10, max_tokens=None))
    assert reply.header("x-ratelimit-remaining-tokens") == str(160000 - 1010)


def test_rejected_request_debits_no_tokens_and_no_request_without_count_rejected() -> None:
    emu, _ = make("requests=10/s,tokens=100/s", count_rejected=False)
    assert send(emu, body(input_tokens=79, max_tokens=1)).status == 200
    reply = send(emu, body(input_tokens=49, max_tokens=1))
    assert reply.status == 429
    assert reply.header("x-ratelimit-remaining-requests") == "9"
    assert reply.header("x-ratelimit-remaining-tokens") == "20"


def test_window_of_one_second_compresses_the_minute() -> None:
    emu, clock = make("requests=2/s,tokens=1000/s")
    assert [send(emu, body()).status for _ in range(3)] == [200, 200, 429]
    clock.advance(0.5)
    reply = send(emu, body())
    assert reply.status == 200
    assert reply.header("x-ratelimit-reset-requests") == "1s"


# ------------------------------------------------------------------ Anthropic profile


def test_anthropic_headers_rounding_and_rfc3339_resets() -> None:
    emu, _ = make(
        "requests=50/min,input_tokens=80000/min,output_tokens=16000/min",
        profile=Profile.ANTHROPIC,
    )
    reply = send(
        emu,
        body(Profile.ANTHROPIC, input_tokens=1500, output_tokens=3600, max_tokens=4000),
        profile=Profile.ANTHROPIC,
    )
    assert reply.status == 200
    headers = dict(reply.headers)
    assert headers["anthropic-ratelimit-requests-limit"] == "50"
    assert headers["anthropic-ratelimit-requests-remaining"] == "49"
    assert headers["anthropic-ratelimit-requests-reset"] == "2025-02-24T22:25:48Z"
    assert headers["anthropic-ratelimit-input-tokens-limit"] == "80000"
    assert headers["anthropic-ratelimit-input-tokens-remaining"] == "79000"  # 78500 rounds up
    assert headers["anthropic-ratelimit-input-tokens-reset"] == "2025-02-24T22:25:48Z"
    assert headers["anthropic-ratelimit-output-tokens-limit"] == "16000"
    assert headers["anthropic-ratelimit-output-tokens-remaining"] == "12000"  # 12400
    assert headers["anthropic-ratelimit-output-tokens-reset"] == "2025-02-24T22:26:00Z"
    assert headers["anthropic-ratelimit-tokens-limit"] == "96000"
    assert headers["anthropic-ratelimit-tokens-remaining"] == "91000"  # 90900
    assert headers["anthropic-ratelimit-tokens-reset"] == "2025-02-24T22:25:48Z"
    assert headers["request-id"].startswith("req_")
    usage = reply.json()["usage"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (1500, 3600)


def test_anthropic_realtime_output_admits_while_above_zero() -> None:
    emu, _ = make(
        "requests=50/min,input_tokens=80000/min,output_tokens=1000/min",
        profile=Profile.ANTHROPIC,
    )
    req = body(Profile.ANTHROPIC, input_tokens=10, output_tokens=600, max_tokens=5000)
    assert send(emu, req, profile=Profile.ANTHROPIC).status == 200  # max_tokens not charged
    assert send(emu, req, profile=Profile.ANTHROPIC).status == 200  # 400 left -> -200
    reply = send(emu, req, profile=Profile.ANTHROPIC)
    assert reply.status == 429
    assert reply.header("retry-after") == "12"  # 200 / (1000/60 s)
    assert reply.json() == {
        "type": "error",
        "error": {
            "type": "rate_limit_error",
            "message": "This request would exceed the rate limit for your organization of 1,000"
            " output tokens per minute. For details, refer to:"
            " https://docs.anthropic.com/en/api/rate-limits. You can see the response headers"
            " for current usage. Please reduce the prompt length or the maximum tokens"
            " requested, or try again later.",
        },
        "request_id": reply.header("request-id"),
    }


def test_anthropic_reserve_mode_refunds_unused_output() -> None:
    emu, _ = make(
        "requests=50/min,input_tokens=80000/min,output_tokens=1500/min",
        profile=Profile.ANTHROPIC,
        output_mode=OutputMode.RESERVE,
    )
    req = body(Profile.ANTHROPIC, input_tokens=10, output_tokens=600, max_tokens=1000)
    send(emu, req, profile=Profile.ANTHROPIC)
    level = emu.state()["pools"]["org-emulator/default"]["output_tokens"]["level"]
    assert level == pytest.approx(900)
    too_big = body(Profile.ANTHROPIC, input_tokens=10, output_tokens=1, max_tokens=2000)
    assert "Request too large" in error_message_anthropic(
        send(emu, too_big, profile=Profile.ANTHROPIC)
    )


def error_message_anthropic(reply: Reply) -> str:
    return str(reply.json()["error"]["message"])


def test_output_is_debited_when_generation_ends() -> None:
    emu, _ = make(
        "requests=50/min,input_tokens=80000/min,output_tokens=6000/min",
        profile=Profile.ANTHROPIC,
        latency=LatencyConfig(ttft_ms=100, tokens_per_s=100),
    )
    req = body(Profile.ANTHROPIC, input_tokens=10, output_tokens=300, max_tokens=1000)
    raw = CompletionRequest(Profile.ANTHROPIC, {"x-api-key": "k"}, json.dumps(req).encode())
    pending = emu.complete(raw)
    assert isinstance(pending, Deferred)
    assert pending.delay_s == pytest.approx(3.1)
    pools = emu.state()["pools"]["org-emulator/default"]
    assert pools["output_tokens"]["level"] == 6000
    reply = pending.complete()
    assert reply.header("anthropic-ratelimit-output-tokens-remaining") == "6000"  # 5700
    assert emu.state()["pools"]["org-emulator/default"]["output_tokens"]["level"] == 5700


# ------------------------------------------------------------------ Azure and Gemini


def test_azure_request_window_is_a_sixth_and_tokens_slide() -> None:
    emu, clock = make("requests=120/min,tokens=1000/min", profile=Profile.AZURE)
    first = send(emu, body(input_tokens=599, max_tokens=1), profile=Profile.AZURE)
    assert first.header("x-ratelimit-limit-requests") == "20"
    assert first.header("x-ratelimit-remaining-requests") == "19"
    assert first.header("x-ratelimit-reset-requests") == "10"
    assert first.header("x-ratelimit-remaining-tokens") == "400"
    assert first.header("x-ratelimit-reset-tokens") == "60"
    clock.advance(30)
    send(emu, body(input_tokens=299, max_tokens=1), profile=Profile.AZURE)
    clock.advance(0.5)
    reply = send(emu, body(input_tokens=499, max_tokens=1), profile=Profile.AZURE)
    assert reply.status == 429
    assert (reply.header("retry-after"), reply.header("retry-after-ms")) == ("30", "29500")
    assert reply.json() == {
        "error": {
            "code": "429",
            "message": "Requests to the ChatCompletions_Create Operation under Azure OpenAI API"
            " version 2024-08-01-preview have exceeded token rate limit of your current OpenAI"
            " S0 pricing tier. Please retry after 30 seconds. Please go here:"
            " https://aka.ms/oai/quotaincrease if you would like to further increase the"
            " default rate limit.",
        }
    }
    clock.advance(29.5)  # the first call's 600 tokens come back exactly 60 s later
    assert send(emu, body(input_tokens=499, max_tokens=1), profile=Profile.AZURE).status == 200


def test_azure_charges_best_of() -> None:
    emu, _ = make("requests=120/min,tokens=10000/min", profile=Profile.AZURE)
    data = {**body(input_tokens=100, max_tokens=100), "best_of": 3}
    reply = send(emu, data, profile=Profile.AZURE)
    assert reply.header("x-ratelimit-remaining-tokens") == str(10000 - 400)


def test_gemini_resource_exhausted_with_retry_info() -> None:
    emu, _ = make("requests=3/min,tokens=100000/min", profile=Profile.GEMINI)
    for _ in range(3):
        reply = send(emu, body(Profile.GEMINI), profile=Profile.GEMINI)
        assert reply.status == 200
        assert "usageMetadata" in reply.json()
        assert not any(name.startswith("x-ratelimit") for name, _ in reply.headers)
    error = send(emu, body(Profile.GEMINI), profile=Profile.GEMINI).json()["error"]
    assert (error["code"], error["status"]) == (429, "RESOURCE_EXHAUSTED")
    violation = error["details"][0]["violations"][0]
    assert violation["quotaId"] == "GenerateRequestsPerMinutePerProjectPerModel"
    assert error["details"][-1] == {
        "@type": "type.googleapis.com/google.rpc.RetryInfo",
        "retryDelay": "20s",
    }


# ------------------------------------------------------------------ pools, limits


def test_pools_are_per_org_and_shared_between_models() -> None:
    clock = ManualClock()
    config = EmulatorConfig(
        pools=(
            PoolConfig("sonnet", parse_limits_text("requests=1/min"), ("claude-sonnet-*",)),
            PoolConfig("other", parse_limits_text("requests=5/min")),
        ),
        keys={"sk-a": "org-a", "sk-b": "org-b"},
    )
    emu = Emulator(config, clock=clock)
    assert send(emu, body(model="claude-sonnet-4-0"), key="sk-a").status == 200
    assert send(emu, body(model="claude-sonnet-4-5"), key="sk-a").status == 429  # shared
    assert send(emu, body(model="claude-sonnet-4-5"), key="sk-b").status == 200  # other org
    assert send(emu, body(model="gpt-4o"), key="sk-a").status == 200
    assert set(emu.state()["pools"]) == {"org-a/sonnet", "org-b/sonnet", "org-a/other"}


def test_scheduled_limit_change_without_notice() -> None:
    change = FaultConfig(
        FaultKind.LIMIT_CHANGE, start_s=2.0, limits=parse_limits_text("tokens=10/s")
    )
    emu, clock = make("requests=100/s,tokens=1000/s", faults=(change,))
    assert send(emu, body()).header("x-ratelimit-limit-tokens") == "1000"
    clock.advance(2.5)
    reply = send(emu, body(input_tokens=4, max_tokens=1))
    assert reply.header("x-ratelimit-limit-tokens") == "10"
    assert reply.header("x-ratelimit-remaining-tokens") == "5"
    assert send(emu, body(input_tokens=9, max_tokens=1)).status == 429


def test_set_limits_mid_run() -> None:
    emu, _ = make("requests=100/s,tokens=1000/s")
    send(emu, body())
    emu.set_limits(parse_limits_text("requests=1/s"), "default")
    assert send(emu, body()).header("x-ratelimit-limit-requests") == "1"


def test_deterministic_output_below_max_tokens() -> None:
    emu, _ = make()
    data = body(max_tokens=200)
    first = send(emu, data).json()["usage"]["completion_tokens"]
    assert 1 <= first <= 200
    assert send(emu, data).json()["usage"]["completion_tokens"] == first


def test_invalid_body_and_unknown_model() -> None:
    clock = ManualClock()
    only = (PoolConfig("p", parse_limits_text("requests=1/s"), ("gpt-*",)),)
    emu = Emulator(EmulatorConfig(pools=only), clock=clock)
    bad = emu.complete(CompletionRequest(Profile.OPENAI, {}, b"{not json"))
    assert isinstance(bad, Reply) and bad.status == 400
    assert send(emu, body(model="llama")).status == 404


# ------------------------------------------------------------------ faults


def _fault(kind: FaultKind, **options: Any) -> FaultConfig:
    return FaultConfig(kind, **options)


@pytest.mark.parametrize(
    ("profile", "fault", "status", "retry_after", "check"),
    [
        (Profile.OPENAI, _fault(FaultKind.RATE_LIMIT, retry_after_s=3), 429, "3",
         lambda b: "Please try again in 3s." in b["error"]["message"]),
        (Profile.OPENAI, _fault(FaultKind.HUGE_RETRY_AFTER), 429, "86400",
         lambda b: b["error"]["code"] == "rate_limit_exceeded"),
        (Profile.AZURE, _fault(FaultKind.HUGE_RETRY_AFTER), 429, "86400",
         lambda b: "Please retry after 86400 seconds." in b["error"]["message"]),
        (Profile.OPENAI, _fault(FaultKind.INSUFFICIENT_QUOTA), 429, None,
         lambda b: b["error"]["code"] == b["error"]["type"] == "insufficient_quota"),
        (Profile.OPENAI, _fault(FaultKind.CREDIT_BALANCE_EXHAUSTED), 429, None,
         lambda b: b["error"]["code"] == "credit_balance_exhausted"),
        (Profile.OPENAI, _fault(FaultKind.SLOW_DOWN), 429, "1",
         lambda b: b["error"]["code"] == "slow_down"),
        (Profile.OPENAI, _fault(FaultKind.SPEND_CAP), 429, None,
         lambda b: b["error"]["code"] == "organization_spend_limit_exceeded"),
        (Profile.OPENAI, _fault(FaultKind.SERVER_ERROR, status=502), 502, None,
         lambda b: b["error"]["type"] == "server_error"),
        (Profile.OPENAI, _fault(FaultKind.OVERLOADED), 503, None,
         lambda b: b["error"]["code"] == "server_is_overloaded"),
        (Profile.ANTHROPIC, _fault(FaultKind.OVERLOADED), 529, None,
         lambda b: b["error"] == {"type": "overloaded_error", "message": "Overloaded"}),
        (Profile.ANTHROPIC, _fault(FaultKind.OVERLOADED, retry_after_s=7), 529, "7",
         lambda b: b["error"]["type"] == "overloaded_error"),
        (Profile.ANTHROPIC, _fault(FaultKind.SPEND_CAP), 429, None,
         lambda b: b["error"]["details"] == {"error_code": "enforced_spend_limit_reached"}
         and "2025-03-01 at 00:00 UTC" in b["error"]["message"]),
        (Profile.ANTHROPIC, _fault(FaultKind.RATE_LIMIT, retry_after_s=2.5), 429, "3",
         lambda b: b["error"]["type"] == "rate_limit_error"),
        (Profile.GEMINI, _fault(FaultKind.RATE_LIMIT, retry_after_s=37), 429, None,
         lambda b: b["error"]["details"][-1]["retryDelay"] == "37s"),
        (Profile.GEMINI, _fault(FaultKind.OVERLOADED), 503, None,
         lambda b: b["error"]["status"] == "UNAVAILABLE"),
    ],
)  # fmt: skip
def test_replacing_faults(
    profile: Profile, fault: FaultConfig, status: int, retry_after: str | None, check: Any
) -> None:
    emu, _ = make("requests=100/s,tokens=100000/s", profile=profile, faults=(fault,))
    reply = send(emu, body(profile), profile=profile)
    assert reply.status == status
    assert reply.header("retry-after") == retry_after
    assert check(reply.json())
    assert emu.stats()["refused"] == {f"fault:{fault.kind.value}": 1}
    assert emu.stats()["admitted"] == 0


def test_drop_connection_fault() -> None:
    emu, _ = make(faults=(_fault(FaultKind.DROP_CONNECTION, max_hits=1),))
    assert send(emu, body()).drop
    assert send(emu, body()).status == 200


def test_header_faults() -> None:
    emu, _ = make(faults=(_fault(FaultKind.MISSING_HEADERS, api_key="sk-missing"),
                          _fault(FaultKind.NEGATIVE_HEADERS, api_key="sk-neg"),
                          _fault(FaultKind.SHOULD_RETRY, should_retry=False)))  # fmt: skip
    missing = send(emu, body(), key="sk-missing")
    assert not [k for k, _ in missing.headers if k.startswith("x-ratelimit")]
    negative = send(emu, body(), key="sk-neg")
    assert negative.header("x-ratelimit-remaining-tokens") == "-1"
    assert negative.header("x-ratelimit-reset-requests") == "-1"
    assert negative.header("x-should-retry") == "false"


def test_slow_fault_delays_the_answer() -> None:
    emu, _ = make(faults=(_fault(FaultKind.SLOW, delay_ms=250),))
    raw = CompletionRequest(Profile.OPENAI, {}, json.dumps(body()).encode())
    pending = emu.complete(raw)
    assert isinstance(pending, Deferred) and pending.delay_s == pytest.approx(0.25)
    assert pending.complete().header("openai-processing-ms") == "250"


def test_a_delayed_storm_is_decided_on_arrival_and_answered_later() -> None:
    emu, _ = make(faults=(_fault(FaultKind.RATE_LIMIT, delay_ms=500, max_hits=2),))
    raw = CompletionRequest(Profile.OPENAI, {}, json.dumps(body()).encode())
    first, second = emu.complete(raw), emu.complete(raw)
    assert send(emu, body()).status == 200, "both hits were taken on arrival"
    for pending in (first, second):
        assert isinstance(pending, Deferred) and pending.delay_s == pytest.approx(0.5)
        assert pending.complete().status == 429


def test_fault_schedule_window_and_key_filter() -> None:
    storm = _fault(FaultKind.RATE_LIMIT, start_s=2, duration_s=5, api_key="sk-a")
    emu, clock = make(faults=(storm,))
    clock.advance(1)
    assert send(emu, body()).status == 200
    clock.advance(2)
    assert send(emu, body()).status == 429
    assert send(emu, body(), key="sk-b").status == 200
    clock.advance(4.5)
    assert send(emu, body()).status == 200


def test_random_faults_are_seeded() -> None:
    def run() -> list[int]:
        emu, _ = make(faults=(_fault(FaultKind.SERVER_ERROR, probability=0.3),), seed=7)
        return [send(emu, body()).status for _ in range(200)]

    statuses = run()
    assert statuses == run()
    assert 30 <= statuses.count(500) <= 90


# ------------------------------------------------------------------ stats


def test_early_retries_are_counted_per_key() -> None:
    emu, clock = make("requests=1/s,tokens=1000/s", count_rejected=False)
    send(emu, body())
    assert send(emu, body()).header("retry-after") == "1"
    clock.advance(0.5)
    send(emu, body())  # early: retry-after 1 s not yet elapsed
    send(emu, body(), key="sk-b")  # another key: not early (it got its own 429 now)
    clock.advance(0.6)
    send(emu, body())  # 1.1 s after the first 429, but 0.6 s after the second
    clock.advance(1.0)
    assert send(emu, body()).status == 200
    stats = emu.stats()
    assert stats["early_retries"] == 2
    assert stats["keys"]["sk-a"]["early_retries"] == 2
    assert stats["keys"]["sk-b"]["early_retries"] == 0


def test_early_retries_follow_the_request_that_was_told_to_wait() -> None:
    emu, clock = make("requests=1/s,tokens=1000/s", count_rejected=False)
    send(emu, body(), headers={"x-client-request-id": "a"})
    told = send(emu, body(), headers={"x-client-request-id": "b"})
    assert told.status == 429 and told.header("retry-after") == "1"
    clock.advance(0.1)
    send(emu, body(), headers={"x-client-request-id": "c"})  # on the wire already: not a retry
    clock.advance(0.2)
    send(emu, body(), headers={"x-client-request-id": "b"})  # b came back 0.3 s in: early
    clock.advance(1.5)
    assert send(emu, body(), headers={"x-client-request-id": "c"}).status == 200
    stats = emu.stats()
    assert stats["early_retries"] == 1
    assert stats["arrivals_during_retry_after"] == 2


def test_stainless_retry_counts_are_tallied() -> None:
    emu, _ = make()
    for count in ("0", "0", "1", "2"):
        send(emu, body(), headers={"x-stainless-retry-count": count})
    assert emu.stats()["stainless_retry_count"] == {"0": 2, "1": 1, "2": 1}


def test_peak_admitted_cost_in_any_window() -> None:
    emu, clock = make("requests=8/s,tokens=100000/s")
    for _ in range(8):
        assert send(emu, body()).status == 200
    for _ in range(8):
        clock.advance(0.125)
        assert send(emu, body()).status == 200
    stats = emu.stats()
    requests = stats["pools"]["org-emulator/default"]["requests"]
    assert requests["admitted_cost"] == 16
    assert requests["peak_window_cost"] == 15  # the burst of 8 plus 7 refills in [0, 1)
    assert requests["configured_per_s"] == 8
    assert stats["by_status"] == {"200": 16}


def test_reset_restores_everything() -> None:
    emu, clock = make("requests=1/s,tokens=1000/s")
    send(emu, body())
    emu.set_limits(parse_limits_text("requests=5/s"))
    clock.advance(3)
    emu.reset()
    assert emu.now_s() == 0
    assert emu.stats()["requests"] == 0
    assert emu.state()["limits"]["default"]["requests"] == "1/1s"
    assert send(emu, body()).header("x-ratelimit-remaining-requests") == "0"

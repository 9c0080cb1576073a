"""The gateway end to end: a real ``llm-throttle serve`` process, real workers, the
emulator, and the official ``openai`` and ``anthropic`` SDKs pointed at its base_url."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import anthropic
import openai
import pytest
import redis
import requests

from gateway.settings import key_digest
from testing.emulator import EmulatorConfig
from testing.harness import COMPRESSED_HEADROOM, LocalStack
from throttle.errors import InvalidRequestError

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEYS = {"key-a": "tenant-a", "key-b": "tenant-b", "key-c": "tenant-c"}
#: The emulator's latency: a streamed answer of ~100 output tokens takes ~1.6 s.
TTFT_MS, TOKENS_PER_S = 50, 60
MESSAGES = [{"role": "user", "content": "Say something."}]
#: Scripted usage: an answer of one token, so a saturation run is about the limits.
QUICK = {"emulator": {"output_tokens": 1}}


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    latency = {"ttft_ms": TTFT_MS, "tokens_per_s": TOKENS_PER_S, "output_fraction": [0.9, 1.0]}
    emulator = EmulatorConfig.from_mapping(
        {
            "latency": latency,
            "pools": [
                {"name": "sat", "models": ["gpt-sat"], "limits": {"requests": "20/s"}},
                {"name": "default", "models": ["*"], "limits": {"requests": "100/s"}},
            ],
        }
    )  # fmt: skip
    group = {"headroom": COMPRESSED_HEADROOM, "default_max_tokens": 100}
    document = {
        "providers": {
            "emu": {"profile": "openai", "base_url": "emulator"},
            "claude": {"profile": "anthropic", "base_url": "emulator"},
        },
        "groups": {
            "emu:mini": {"provider": "emu", "models": ["gpt-4o-mini"], "requests": "100/s"},
            "emu:sat": {"provider": "emu", "models": ["gpt-sat"], "requests": "20/s"},
            "claude:haiku": {"provider": "claude", "models": ["claude-haiku"], "requests": "100/s"},
        },
        "gateway": {
            "max_wait_s": 30,
            "max_body_bytes": 1_000_000,
            "keys": {key_digest(key): {"tenant": tenant} for key, tenant in KEYS.items()},
        },
    }  # fmt: skip
    for spec in document["groups"].values():  # type: ignore[attr-defined]
        spec.update(group)
    with LocalStack(emulator, document) as local:
        local.start_workers(2, concurrency=16)
        local.gateway_url = local.start_gateway()  # type: ignore[attr-defined]
        yield local


def _url(stack: LocalStack) -> str:
    return str(stack.gateway_url)  # type: ignore[attr-defined]


def _open_streams(stack: LocalStack) -> int:
    return int(stack.emulator_stats()["streams"]["open"])


def test_the_openai_sdk_runs_sync_and_streamed_completions(stack: LocalStack) -> None:
    client = openai.OpenAI(base_url=_url(stack) + "/v1", api_key="key-a", max_retries=0)
    answer = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        max_tokens=20,
        temperature=0.2,  # type: ignore[arg-type]
    )
    assert answer.choices[0].message.content == "This is an emulated completion."
    assert answer.usage is not None and 1 <= answer.usage.completion_tokens <= 20

    texts, open_at_first_text, usage = [], None, None
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=100,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            if open_at_first_text is None:
                # the provider's response is still being generated when the first
                # words reach the caller (it takes ~1.6 s: ttft + ~95 tokens at 60/s)
                open_at_first_text = _open_streams(stack)
            texts.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = chunk.usage
    assert open_at_first_text == 1
    assert "".join(texts) == "This is an emulated completion."
    assert len(texts) == 5 and usage is not None and usage.completion_tokens >= 90
    assert _open_streams(stack) == 0


def test_a_gateway_of_two_processes_serves_from_the_same_config(stack: LocalStack) -> None:
    """``--workers 2``: each uvicorn process makes its app from the config the command
    was given (the one case that hands it over through the environment)."""
    url = stack.start_gateway(processes=2)
    client = openai.OpenAI(base_url=url + "/v1", api_key="key-b", max_retries=0)
    for _ in range(4):
        answer = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            max_tokens=10,  # type: ignore[arg-type]
        )
        assert answer.choices[0].message.content == "This is an emulated completion."
    listed = client.models.list()
    assert "gpt-4o-mini" in {model.id for model in listed}


def test_without_include_usage_the_stream_has_no_usage_chunk(stack: LocalStack) -> None:
    client = openai.OpenAI(base_url=_url(stack) + "/v1", api_key="key-b", max_retries=0)
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            max_tokens=10,
            stream=True,  # type: ignore[arg-type]
        )
    )
    assert chunks and all(chunk.choices for chunk in chunks)


def test_the_anthropic_sdk_runs_sync_and_streamed_messages(stack: LocalStack) -> None:
    client = anthropic.Anthropic(base_url=_url(stack), api_key="key-c", max_retries=0)
    message = client.messages.create(
        model="claude-haiku",
        max_tokens=20,
        messages=MESSAGES,
        system="Be brief.",  # type: ignore[arg-type]
    )
    assert message.content[0].text == "This is an emulated completion."  # type: ignore[union-attr]
    assert 1 <= message.usage.output_tokens <= 20

    open_at_first_text, texts = None, []
    with client.messages.stream(model="claude-haiku", max_tokens=100, messages=MESSAGES) as stream:  # type: ignore[arg-type]
        for text in stream.text_stream:
            if open_at_first_text is None:
                open_at_first_text = _open_streams(stack)
            texts.append(text)
        final = stream.get_final_message()
    assert open_at_first_text == 1
    assert "".join(texts) == "This is an emulated completion."
    assert final.usage.output_tokens >= 90 and final.usage.input_tokens >= 1


def test_a_provider_429_before_the_first_byte_pauses_and_the_stream_still_arrives(
    stack: LocalStack,
) -> None:
    before = stack.emulator_stats()["by_status"].get("429", 0)
    fault = {"kind": "rate_limit", "max_hits": 1, "retry_after_s": 1, "pool": "default"}
    stack.emulator_post("/__emu/faults", {"faults": [fault]})
    client = openai.OpenAI(base_url=_url(stack) + "/v1", api_key="key-a", max_retries=0)
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        max_tokens=10,
        stream=True,  # type: ignore[arg-type]
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "This is an emulated completion."
    assert stack.emulator_stats()["by_status"].get("429", 0) == before + 1
    stack.emulator_post("/__emu/faults", {"clear": True})


TOOLS = [
    {
        "type": "function",
        "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
    }
]


def _sent_body(stack: LocalStack, request_id: str) -> dict[str, object]:
    """The body the emulator received for the task ``request_id``."""
    reply = requests.get(stack.emulator.base_url + "/__emu/requests", timeout=10).json()
    bodies = [r["body"] for r in reply["requests"] if r["request_id"] == request_id]
    assert len(bodies) == 1, reply
    return bodies[0]  # type: ignore[no-any-return]


def test_sdk_parameters_reach_the_providers_body_and_unknown_keywords_are_refused(
    stack: LocalStack,
) -> None:
    """``enqueue(temperature=..., tools=[...])`` as the SDK takes them: they reach the
    provider's request body (they were AMQP message properties, never sent); a
    misspelt keyword is InvalidRequestError and nothing is queued."""
    call = {"provider": "emu", "model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 5}
    result = stack.enqueue(**call, temperature=0.2, tools=TOOLS, seed=7)
    result.get(timeout=60)
    body = _sent_body(stack, result.id)
    assert (body["temperature"], body["tools"], body["seed"]) == (0.2, TOOLS, 7)
    assert body["max_tokens"] == 5 and body["messages"] == MESSAGES

    broker = redis.Redis.from_url(stack.config.broker_url)  # type: ignore[union-attr]
    queued = broker.llen("llm")
    with pytest.raises(InvalidRequestError, match="temprature"):
        stack.enqueue(**call, temprature=0.2)
    assert broker.llen("llm") == queued

    client = openai.OpenAI(base_url=_url(stack) + "/v1", api_key="key-b", max_retries=0)
    answer = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=5,
        temperature=0.3,
        tools=TOOLS,  # type: ignore[arg-type]
    )
    body = _sent_body(stack, answer.headers["x-throttle-task-id"])
    assert (body["temperature"], body["tools"]) == (0.3, TOOLS)


def test_a_provider_error_before_the_first_byte_is_the_http_answer(stack: LocalStack) -> None:
    """A streamed call the provider refuses before its first event: the caller gets
    the error as the HTTP status in its API's shape, not a 200 event stream."""
    fault = {"kind": "insufficient_quota", "max_hits": 1, "pool": "default"}
    stack.emulator_post("/__emu/faults", {"faults": [fault]})
    try:
        client = openai.OpenAI(base_url=_url(stack) + "/v1", api_key="key-a", max_retries=0)
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,  # type: ignore[arg-type]
                max_tokens=10,
                stream=True,
            )
        assert caught.value.code == "insufficient_quota"
        assert caught.value.response.headers["content-type"].startswith("application/json")
    finally:
        stack.emulator_post("/__emu/faults", {"clear": True})


def test_a_caller_leaving_mid_stream_leaves_the_task_to_finish_and_settle(
    stack: LocalStack,
) -> None:
    before = stack.emulator_stats()["streams"]
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 100, "stream": True}
    with requests.post(
        _url(stack) + "/v1/chat/completions",
        json=body,
        headers={"authorization": "Bearer key-c"},
        stream=True,
        timeout=30,
    ) as reply:
        assert reply.status_code == 200
        task_id = reply.headers["x-throttle-task-id"]
        assert next(reply.iter_content(chunk_size=None))  # the answer has begun...
    # ...and the caller is gone: the worker reads the provider's answer to its end
    assert stack.app is not None
    result = stack.app.AsyncResult(task_id).get(timeout=60)
    assert result["usage"]["output_tokens"] >= 90  # the whole answer, settled on
    after = stack.emulator_stats()["streams"]
    assert after["finished"] == before["finished"] + 1 and after["open"] == 0


def test_bad_input_gets_a_4xx_in_the_openai_shape_and_queues_nothing(stack: LocalStack) -> None:
    url = _url(stack) + "/v1/chat/completions"
    before = stack.emulator_stats()["requests"]
    good = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 5}
    unknown = b'{"model": "no-such-model", "messages": [{"role": "user", "content": "a"}]}'
    cases = [
        ({"authorization": "Bearer key-a"}, b'{"model": ', 400),
        ({"authorization": "Bearer key-a"}, b'{"model": "no-such-model", "messages": []}', 400),
        ({"authorization": "Bearer key-a"}, unknown, 404),
        ({"authorization": "Bearer key-a"}, b'{"model": "gpt-4o-mini"}', 400),
        ({"authorization": "Bearer key-a"}, b"x" * (10 * 1024 * 1024), 413),
        ({"authorization": "Bearer not-a-key"}, requests.compat.json.dumps(good).encode(), 401),
        ({}, requests.compat.json.dumps(good).encode(), 401),
    ]  # fmt: skip
    for headers, body, status in cases:
        try:
            reply = requests.post(
                url, data=body, headers={**headers, "content-type": "application/json"}, timeout=30
            )
        except requests.ConnectionError:  # a server may close on a 10 MB body it refused
            assert status == 413
            continue
        assert reply.status_code == status, (body[:60], reply.text)
        error = reply.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
    broker = redis.Redis.from_url(stack.config.broker_url)  # type: ignore[union-attr]
    assert broker.llen("llm") == 0
    assert stack.emulator_stats()["requests"] == before
    reply = requests.post(
        _url(stack) + "/v1/messages", json={}, headers={"x-api-key": "nope"}, timeout=10
    )
    assert reply.status_code == 401 and reply.json()["error"]["type"] == "authentication_error"


def test_models_and_limits_show_what_the_callers_key_may_use(stack: LocalStack) -> None:
    headers = {"authorization": "Bearer key-b"}
    models = requests.get(_url(stack) + "/v1/models", headers=headers, timeout=10).json()
    assert {m["id"] for m in models["data"]} == {"gpt-4o-mini", "gpt-sat", "claude-haiku"}
    limits = requests.get(_url(stack) + "/v1/limits", headers=headers, timeout=10).json()
    assert limits["caller"]["tenant"] == "tenant-b"
    assert {g["name"] for g in limits["groups"]} == {"emu:mini", "emu:sat", "claude:haiku"}
    metrics = requests.get(_url(stack) + "/metrics", timeout=10).text
    assert 'llm_gateway_requests_total{endpoint="/v1/chat/completions",status="200"}' in metrics


async def _call_until_done(client: openai.AsyncOpenAI, refusals: list[float]) -> int:
    """One call, retried after each gateway 429 as its Retry-After says; returns the
    number of attempts."""
    for attempt in range(1, 40):
        try:
            await client.chat.completions.create(
                model="gpt-sat",
                messages=MESSAGES,
                max_tokens=5,
                extra_body=QUICK,  # type: ignore[arg-type]
            )
            return attempt
        except openai.RateLimitError as exc:
            wait_ms = exc.response.headers.get("retry-after-ms")
            assert wait_ms is not None and exc.response.headers.get("retry-after") is not None
            assert exc.body is not None and exc.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
            refusals.append(float(wait_ms) / 1000)
            await asyncio.sleep(float(wait_ms) / 1000)
    raise AssertionError("a call was refused 39 times")


def test_200_concurrent_calls_against_a_saturated_group_never_reach_a_provider_429(
    stack: LocalStack,
) -> None:
    """Three keys, 200 calls at once at a 20/s group (10 s of work); a caller waits
    at most 3 s to start, so most are refused at first and come back when told."""
    before = stack.emulator_stats()

    async def run() -> list[int]:
        clients = [
            openai.AsyncOpenAI(
                base_url=_url(stack) + "/v1",
                api_key=key,
                max_retries=0,
                timeout=120,
                default_headers={"x-throttle-max-wait-s": "3"},
            )
            for key in KEYS
        ]
        refusals: list[float] = []
        attempts = await asyncio.gather(
            *(_call_until_done(clients[i % 3], refusals) for i in range(200))
        )
        for client in clients:
            await client.close()
        assert refusals and all(wait_s >= 1.0 for wait_s in refusals)
        return list(attempts)

    attempts = asyncio.run(run())
    after = stack.emulator_stats()
    assert len(attempts) == 200
    assert after["by_status"].get("429", 0) == before["by_status"].get("429", 0)
    assert after["admitted"] - before["admitted"] == 200
    assert max(attempts) > 1  # the backpressure answered some with 429


def test_health_turns_503_without_workers_or_redis_and_200_when_back(stack: LocalStack) -> None:
    def status() -> int:
        return requests.get(_url(stack) + "/health", timeout=5).status_code

    def within(seconds: float, expected: int) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if status() == expected:
                return True
            time.sleep(0.2)
        return False

    assert status() == 200
    stack.stop_workers()
    assert within(5.0, 503)
    stack.start_workers(1, concurrency=4)
    assert within(10.0, 200)
    stack.redis.crash()
    assert within(5.0, 503)
    stack.redis.start()
    assert within(30.0, 200)


def test_a_worker_killed_mid_stream_ends_the_callers_stream_with_an_error(
    stack: LocalStack,
) -> None:
    """The relay names its worker; when the stream goes quiet the gateway reads that
    worker's heartbeat, and a dead one ends the caller's stream with an ``error``
    event (the SDK raises it) instead of a wait until request_timeout_s."""
    if not any(worker.poll() is None for worker in stack.workers):
        stack.start_workers(1, concurrency=4)
    client = openai.OpenAI(base_url=_url(stack) + "/v1", api_key="key-a", max_retries=0)
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        max_tokens=100,
        stream=True,  # type: ignore[arg-type]
    )
    chunks = iter(stream)
    next(chunks)  # the answer has begun (it takes ~1.6 s)
    for index, worker in enumerate(stack.workers):
        if worker.poll() is None:
            stack.kill_worker(index)
    with pytest.raises(openai.APIError) as caught:
        for _chunk in chunks:
            pass
    assert caught.value.code == "worker_lost", caught.value

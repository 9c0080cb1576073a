"""The routes: ``POST /v1/chat/completions``, ``POST /v1/messages``, ``GET /v1/models``,
``GET /v1/limits``, ``GET /health``, ``GET /metrics``.

A completion: the key (401 unknown) -> the body (413 too large, 400 malformed) -> the
model's provider (404) -> backpressure (one Redis read; 429 + Retry-After past the
caller's wait) -> ``aenqueue`` -> the result (one shared subscription) or, with
``stream``, the task's relayed events as server-sent events from the first one on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from celery import _state as celery_state
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway import metrics
from gateway.backpressure import Backpressure, retry_headers
from gateway.errors import GatewayError, from_exception
from gateway.health import Health
from gateway.relay import TaskWatch, relay_entries
from gateway.settings import GatewaySettings, KeyGrant, gateway_settings
from gateway.translate import (
    ANTHROPIC,
    OPENAI,
    ChatRequest,
    ModelIndex,
    chat_request,
    decode_body,
    max_wait_s,
    presented_key,
)
from tasks.aio import ResultListener, aenqueue
from tasks.completion import output_limit
from throttle.config import Config
from throttle.connect import RedisClient, connect, connect_async
from throttle.errors import ConfigError, ThrottleError
from throttle.keys import KeyBuilder
from throttle.limiter import RedisLimiter
from throttle.redis_url import Topology, parse_redis_url
from throttle.status import read_status, status_document
from workers.app import default_app
from workers.app_config import app_config
from workers.heartbeat import heartbeat_key
from workers.relay import relay_key

log = logging.getLogger(__name__)


@dataclass
class Gateway:
    """What the routes share; built when the server starts."""

    config: Config
    settings: GatewaySettings
    index: ModelIndex
    celery: Any
    client: Any  # redis.asyncio on the limiter's Redis
    listener: ResultListener
    backpressure: Backpressure
    health: Health
    status_client: RedisClient

    @classmethod
    def start(cls, celery: Any) -> Gateway:
        config = app_config(celery)
        settings = gateway_settings(config.gateway)
        celery.set_current()
        celery.set_default()  # the app of every thread, the send's worker threads too
        if parse_redis_url(config.redis.url).topology is Topology.CLUSTER:
            # its backpressure and health reads pipeline TIME, which a Cluster refuses
            raise ConfigError(
                "redis.url: the gateway does not run against a Redis Cluster yet;"
                " the workers do (README, Redis Cluster, Sentinel and Valkey)"
            )
        # The gateway awaits results (ResultListener), never joins one with .get():
        # without this, each send subscribed Celery's blocking result consumer to the
        # task, and collecting the result unsubscribed it on the event loop's thread
        # (a blocking Redis write per request; cProfile of the gateway under load).
        celery_state._set_task_join_will_block(True)
        client = connect_async(
            config.redis.url, timeout_s=config.redis.socket_timeout_s, what="redis.url"
        )
        broker = None
        if config.broker_url != config.redis.url and config.broker_url.startswith("redis"):
            broker = connect_async(config.broker_url, timeout_s=1.0, what="celery.broker_url")
        limiter = RedisLimiter(connect(config.redis.url), keys=KeyBuilder(config.redis.prefix))
        return cls(
            config,
            settings,
            ModelIndex.build(config, settings.providers),
            celery,
            client,
            ResultListener(celery.backend),
            Backpressure(config, limiter, client),
            Health(client, broker, heartbeat_key(config.redis.prefix)),
            connect(config.redis.url, timeout_s=2.0),
        )

    async def close(self) -> None:
        await self.listener.close()
        await self.client.aclose()
        self.status_client.close()


# -- completions ---------------------------------------------------------------------


def _grant(gateway: Gateway, request: Request) -> KeyGrant:
    grant = gateway.settings.grant_for(presented_key(request.headers))
    if grant is None:
        raise GatewayError(
            401,
            "Incorrect API key provided.",
            "invalid_request_error",
            "invalid_api_key",
        )
    return grant


async def _body(gateway: Gateway, request: Request) -> dict[str, Any]:
    limit = gateway.settings.max_body_bytes
    too_large = GatewayError(
        413, f"request body larger than {limit} bytes", code="request_too_large"
    )
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return decode_body(b"".join(chunks))


@dataclass(frozen=True)
class Admit:
    """Backpressure's answer for one request."""

    group: str
    #: Seconds to tell the caller to come back after; None: queue it.
    refused_s: float | None
    #: The read found the group's fair queue empty (the send need not read it again).
    queue_empty: bool


async def _admit(gateway: Gateway, request: Request, chat: ChatRequest, grant: KeyGrant) -> Admit:
    """Backpressure: queue the request, or refuse it with a Retry-After."""
    settings = gateway.config.group_for(chat.provider, chat.model)
    try:
        limit = output_limit(
            settings.default_max_tokens, chat.max_tokens, chat.max_completion_tokens
        )
        costs = gateway.backpressure.costs(
            settings, grant.tenant, chat.model, chat.messages, limit, chat.params
        )
    except ThrottleError:  # enqueue names the problem
        return Admit(settings.name, None, False)
    wait_s = max_wait_s(request.headers, gateway.settings.max_wait_s)
    group, start, queue_empty = await gateway.backpressure.start(settings, grant.tenant, costs)
    return Admit(group, gateway.backpressure.refuse(group, start, wait_s), queue_empty)


async def _complete(request: Request, api: str) -> Response:
    gateway: Gateway = request.app.state.gateway
    endpoint = request.url.path
    started = time.monotonic()
    try:
        grant = _grant(gateway, request)
        chat = chat_request(api, await _body(gateway, request), gateway.index)
        admit = await _admit(gateway, request, chat, grant)
        if admit.refused_s is not None:
            metrics.REFUSED.labels(admit.group).inc()
            raise GatewayError(
                429,
                f"{admit.group}: the queue would hold this request longer than the caller"
                f" allows; retry in {admit.refused_s:.1f} s",
                "rate_limit_error",
                "rate_limit_exceeded",
                headers=retry_headers(admit.refused_s),
            )
        completion = await aenqueue(
            provider=chat.provider,
            model=chat.model,
            messages=chat.messages,
            max_tokens=chat.max_tokens,
            max_completion_tokens=chat.max_completion_tokens,
            tenant=grant.tenant,
            lane=grant.lane,
            params=chat.params,
            stream=chat.stream,
            queue_seen_empty=admit.queue_empty,
        )
        if chat.stream:
            response = await _stream(gateway, completion.id, api)
        else:
            result = await completion.wait(gateway.settings.request_timeout_s, gateway.listener)
            headers = {**_facts(result), "x-throttle-task-id": completion.id}
            response = JSONResponse(result["response"], headers=headers)
    except Exception as exc:
        error = from_exception(exc)
        if error.status >= 500:
            log.warning("%s: %s %s", endpoint, error.status, error.message)
        response = JSONResponse(
            error.body(api == ANTHROPIC), error.status, headers=dict(error.headers)
        )
    metrics.REQUESTS.labels(endpoint, str(response.status_code)).inc()
    metrics.SECONDS.labels(endpoint).observe(time.monotonic() - started)
    return response


def _facts(result: Mapping[str, Any]) -> dict[str, str]:
    facts = result.get("throttle") or {}
    return {
        "x-throttle-group": str(facts.get("group", "")),
        "x-throttle-waited-s": str(facts.get("waited_s", "")),
    }


async def _stream(gateway: Gateway, task_id: str, api: str) -> Response:
    """Wait for the first relayed entry: an error is answered as such; events start
    the event stream, which goes on as the worker relays them (an error after them
    is an ``error`` event in the caller's API's shape)."""
    key = relay_key(gateway.config.redis.prefix, task_id)
    watch = TaskWatch(gateway.listener, gateway.client, gateway.health.heartbeat_key, task_id)
    entries = relay_entries(gateway.client, key, gateway.settings.request_timeout_s, watch)
    kind, value = await anext(entries)
    if kind == "error":
        raise value

    async def body() -> AsyncIterator[bytes]:
        metrics.STREAMS.inc()
        try:
            if kind == "d":
                yield value
            async for next_kind, next_value in entries:
                if next_kind == "d":
                    yield next_value
                elif next_kind == "error":
                    yield next_value.sse_event(api == ANTHROPIC)
        finally:
            metrics.STREAMS.dec()
            with contextlib.suppress(Exception):
                await entries.aclose()  # type: ignore[attr-defined]

    headers = {
        "cache-control": "no-cache",
        "x-accel-buffering": "no",
        "x-throttle-task-id": task_id,
    }
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)


async def chat_completions(request: Request) -> Response:
    return await _complete(request, OPENAI)


async def messages(request: Request) -> Response:
    return await _complete(request, ANTHROPIC)


# -- the rest --------------------------------------------------------------------------


async def models(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    try:
        _grant(gateway, request)
    except GatewayError as error:
        return JSONResponse(error.openai_body(), error.status)
    data = [
        {"id": model, "object": "model", "created": 0, "owned_by": provider}
        for model, provider in gateway.index.models()
    ]
    return JSONResponse({"object": "list", "data": data})


async def limits(request: Request) -> Response:
    """Every group's status (``llm-throttle status --json``) and the caller's grant."""
    gateway: Gateway = request.app.state.gateway
    try:
        grant = _grant(gateway, request)
        now_ms, statuses = await asyncio.to_thread(
            read_status, gateway.status_client, gateway.config
        )
    except Exception as exc:
        error = from_exception(exc)
        return JSONResponse(error.openai_body(), error.status)
    document = status_document(statuses, now_ms)
    document["caller"] = {
        "tenant": grant.tenant,
        "lane": grant.lane or gateway.config.scheduler.default_lane,
    }
    return JSONResponse(document)


async def health(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    ok, detail = await gateway.health.check()
    return JSONResponse({"status": "ok" if ok else "unavailable", **detail}, 200 if ok else 503)


async def prometheus(request: Request) -> Response:
    return Response(metrics.exposition(), media_type="text/plain; version=0.0.4")


def create_app(celery: Any | None = None) -> Starlette:
    """The ASGI app; ``celery``: the throttle's Celery app (default: ``workers.app``,
    configured from ``LLM_THROTTLE_CONFIG``)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if celery is None:
            app.state.gateway = Gateway.start(default_app())
        else:
            app.state.gateway = Gateway.start(celery)
        try:
            yield
        finally:
            await app.state.gateway.close()

    routes = [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/limits", limits, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)

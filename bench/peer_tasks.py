"""Celery tasks for ``bench/utilization.py``: the same provider call without our throttle.

Workers import this module with ``--include bench.peer_tasks`` (the bench puts the repo
root on ``PYTHONPATH``). Every task makes the call the throttled ``complete`` task makes:
one :class:`~throttle.providers.client.ProviderClient` per worker process, the provider
settings of the stack's config, the task id sent as ``x-client-request-id`` so the
emulator judges early retries per request, exactly as it does for ``complete``.

* ``bench.plain_call``: no throttle, no 429 handling (the throttle-cost baseline).
* ``bench.rate_limited_call``: Celery's built-in ``rate_limit``, set at run time with
  ``app.control.rate_limit`` (a per worker process token bucket); a 429 is retried the
  usual Celery way, ``self.retry(countdown=<retry-after>)``, at most
  :data:`CELERY_MAX_RETRIES` times.
* ``bench.tenacity_call``: no throttle; a 429 is retried in the task with tenacity, the
  OpenAI cookbook's recipe ``wait_random_exponential(min=1, max=60)`` and
  ``stop_after_attempt(6)``, its times multiplied by ``time_scale`` (window / 60 s).
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from celery import Celery, Task, shared_task
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from throttle.errors import RateLimitedError
from throttle.providers.client import ProviderClient, ProviderResponse
from throttle.providers.request import HttpRequest, Message

PLAIN_TASK = "bench.plain_call"
RATE_LIMITED_TASK = "bench.rate_limited_call"
TENACITY_TASK = "bench.tenacity_call"

#: Celery retries of a 429 for ``rate_limited_call`` (Celery's default is 3).
CELERY_MAX_RETRIES = 5
#: The cookbook's tenacity recipe, in seconds of a 60 s window.
TENACITY_MIN_WAIT_S = 1.0
TENACITY_MAX_WAIT_S = 60.0
TENACITY_ATTEMPTS = 6
#: Pool threads per worker process share one client; size its connection pool to them.
CLIENT_POOL_SIZE = 64

_clients: dict[tuple[int, str], ProviderClient] = {}
_clients_lock = threading.Lock()


def provider_client(app: Celery, provider: str) -> ProviderClient:
    """This process's client for ``provider`` of the app's throttle config."""
    from workers.app_config import app_config

    key = (os.getpid(), provider)
    client = _clients.get(key)
    if client is None:
        with _clients_lock:
            client = _clients.get(key)
            if client is None:
                settings = app_config(app).providers[provider]
                client = ProviderClient(
                    settings.profile,
                    settings.base_url,
                    settings.credential,
                    pool_size=CLIENT_POOL_SIZE,
                )
                _clients[key] = client
    return client


def build_request(
    client: ProviderClient,
    request_id: str | None,
    model: str,
    messages: Sequence[Message],
    max_tokens: int,
) -> HttpRequest:
    """The request ``complete`` would send, naming itself with ``x-client-request-id``."""
    request = client.build(model=model, messages=messages, max_tokens=max_tokens)
    if request_id is None:
        return request
    headers = {**request.headers, "x-client-request-id": request_id}
    return dataclasses.replace(request, headers=headers)


def result_body(response: ProviderResponse, attempts: int = 1) -> dict[str, Any]:
    """A result of the same shape and size as ``complete``'s, minus the throttle facts."""
    usage = response.usage
    return {
        "response": dict(response.body),
        "usage": None
        if usage is None
        else {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
        "attempts": attempts,
    }


@shared_task(bind=True, name=PLAIN_TASK)
def plain_call(
    self: Task, provider: str, model: str, messages: Sequence[Message], max_tokens: int
) -> dict[str, Any]:
    client = provider_client(self.app, provider)
    request = build_request(client, self.request.id, model, messages, max_tokens)
    return result_body(client.send(request))


@shared_task(bind=True, name=RATE_LIMITED_TASK, max_retries=CELERY_MAX_RETRIES)
def rate_limited_call(
    self: Task, provider: str, model: str, messages: Sequence[Message], max_tokens: int
) -> dict[str, Any]:
    client = provider_client(self.app, provider)
    request = build_request(client, self.request.id, model, messages, max_tokens)
    try:
        response = client.send(request)
    except RateLimitedError as exc:
        countdown_s = exc.wait_s if exc.wait_s is not None else 1.0
        raise self.retry(exc=exc, countdown=countdown_s) from exc
    return result_body(response, attempts=self.request.retries + 1)


@shared_task(bind=True, name=TENACITY_TASK)
def tenacity_call(
    self: Task,
    provider: str,
    model: str,
    messages: Sequence[Message],
    max_tokens: int,
    time_scale: float = 1.0,
) -> dict[str, Any]:
    client = provider_client(self.app, provider)
    request = build_request(client, self.request.id, model, messages, max_tokens)
    retrying = Retrying(
        retry=retry_if_exception_type(RateLimitedError),
        wait=wait_random_exponential(
            multiplier=time_scale,
            min=TENACITY_MIN_WAIT_S * time_scale,
            max=TENACITY_MAX_WAIT_S * time_scale,
        ),
        stop=stop_after_attempt(TENACITY_ATTEMPTS),
        reraise=True,
    )
    response = retrying(client.send, request)
    return result_body(response, attempts=retrying.statistics.get("attempt_number", 1))


def task_kwargs(
    provider: str, model: str, messages: Sequence[Message], max_tokens: int
) -> Mapping[str, Any]:
    """Keyword arguments every peer task takes."""
    return {
        "provider": provider,
        "model": model,
        "messages": list(messages),
        "max_tokens": max_tokens,
    }

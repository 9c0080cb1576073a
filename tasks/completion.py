"""The public task API: ``complete`` and ``enqueue``.

From a web app::

    from tasks import enqueue
    result = enqueue(provider="openai", model="gpt-4o-mini",
                     messages=[{"role": "user", "content": "Hello"}], max_tokens=64,
                     tenant="acme")
    result.get(timeout=60)["response"]

The request is checked before it is sent (malformed messages, an unknown provider or
model fail at once, nothing is queued), and the prompt is hidden from Flower and logs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from celery import current_app, shared_task
from celery.result import AsyncResult
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from throttle.config import Config
from throttle.errors import (
    ConfigError,
    CostExceedsCapacityError,
    InvalidRequestError,
    StorageError,
    UnknownGroupError,
)
from throttle.providers.request import Message
from throttle.providers.tokens import TokenEstimator
from workers.publish import COMPLETE_TASK, kwargs_repr
from workers.runtime import CompletionCall
from workers.task import ThrottledTask
from workers.validate import completion_kwargs

#: Prompt-size estimates for the enqueue-time capacity check (uncalibrated, conservative
#: enough: a request this check passes may still be refused by a worker that knows better).
_ESTIMATOR = TokenEstimator()


class CompletionTask(ThrottledTask):
    """The base of :func:`complete`: a send into a backlogged group joins its fair
    queue at once (:meth:`ThrottledTask.apply_async`), and a received message is
    checked before it runs (workers/validate.py)."""

    #: Expected failures: logged without a traceback, stored as the task's result.
    throws = (InvalidRequestError, UnknownGroupError)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return super().__call__(**completion_kwargs(args, kwargs))

    def call_from_kwargs(self, kwargs: Mapping[str, Any]) -> CompletionCall | None:
        try:
            return CompletionCall(
                kwargs["provider"],
                kwargs["model"],
                kwargs["messages"],
                kwargs["max_tokens"],
                kwargs.get("tenant"),
                kwargs.get("credential"),
                kwargs.get("params") or {},
                None,
                kwargs.get("lane"),
            )
        except (KeyError, TypeError):
            return None  # malformed: the worker gives it its typed error


@shared_task(bind=True, base=CompletionTask, name=COMPLETE_TASK)
def complete(
    self: ThrottledTask,
    provider: str,
    model: str,
    messages: Sequence[Message],
    max_tokens: int,
    tenant: str | None = None,
    credential: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    throttle_state: Mapping[str, Any] | None = None,
    lane: str | None = None,
) -> Any:
    """Run one chat completion through the throttle; returns response, usage and the
    throttle's facts (seconds waited, attempts, 429s seen, parks)."""
    call = CompletionCall(
        provider,
        model,
        messages,
        max_tokens,
        tenant,
        credential,
        params or {},
        self.request.id,
        lane,
    )
    result = self.run_completion(call, throttle_state)
    result["throttle"]["celery_retries"] = self.request.retries
    if metadata is not None:
        result["metadata"] = dict(metadata)
    return result


def validate(
    config: Config,
    provider: str,
    model: str,
    messages: Sequence[Message],
    max_tokens: int,
    params: Mapping[str, Any] | None = None,
    tenant: str | None = None,
    lane: str | None = None,
) -> None:
    """Reject a request that could never run, before anything is queued: an unknown
    provider, model or lane, malformed messages or params, a cost above a limit's
    capacity."""
    settings = config.group_for(provider, model)
    try:
        config.scheduler.lane(lane)
    except ConfigError as exc:
        raise InvalidRequestError(str(exc)) from None
    profile = config.providers[settings.provider].resolved_profile()
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise InvalidRequestError(f"max_tokens must be a positive integer: {max_tokens!r}")
    profile.build_request(
        base_url=config.providers[settings.provider].base_url,
        model=model,
        messages=messages,
        max_tokens=max_tokens,
        params=params or {},
        api_key=None,
    )
    group = config.limit_group(settings, tenant)
    estimate = _ESTIMATOR.estimate_messages(model, messages)
    reservation = profile.reserve(input_tokens=estimate, max_tokens=max_tokens, params=params)
    costs = config.costs_for(settings, group, reservation.costs)
    for dim in group.dimensions:
        cost, capacity = costs.get(dim.name, 0.0), group.usable_capacity(dim)
        if cost > capacity:
            raise CostExceedsCapacityError(group.name, dim.name, cost, capacity)


def enqueue(
    *,
    provider: str,
    model: str,
    messages: Sequence[Message],
    max_tokens: int,
    tenant: str | None = None,
    lane: str | None = None,
    credential: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    **options: Any,
) -> AsyncResult:
    """Validate and queue one completion; returns its ``AsyncResult``.

    ``tenant`` names whose share it uses, ``lane`` its priority (``[scheduler]`` in the
    config; default the configured default lane).

    ``options`` go to ``apply_async`` (``task_id``, ``countdown``, ``expires``...).
    """
    from workers.app import app_config

    config = app_config(current_app)
    validate(config, provider, model, messages, max_tokens, params, tenant, lane)
    kwargs = {
        "provider": provider,
        "model": model,
        "messages": list(messages),
        "max_tokens": max_tokens,
        "tenant": tenant,
        "credential": credential,
        "metadata": dict(metadata) if metadata is not None else None,
        "params": dict(params) if params else None,
    }
    if lane is not None:
        kwargs["lane"] = lane
    try:
        return complete.apply_async(
            kwargs=kwargs, argsrepr="()", kwargsrepr=kwargs_repr(kwargs), **options
        )
    except (OperationalError, RedisError, OSError, RuntimeError) as exc:
        # RuntimeError: Celery's Redis result backend gave up reconnecting.
        raise StorageError(f"broker unreachable, nothing was queued: {exc}") from exc

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
from celery.exceptions import TaskPredicate
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
from throttle.providers.streaming import check_streamable
from throttle.providers.tokens import TokenEstimator
from workers.app import default_app
from workers.app_config import app_config, has_config
from workers.context import worker_context
from workers.publish import COMPLETE_TASK, kwargs_repr
from workers.relay import StreamRelay, relay_key, wants_usage_chunk
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
                bool(kwargs.get("stream")),
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
    stream: bool = False,
) -> Any:
    """Run one chat completion through the throttle; returns response, usage and the
    throttle's facts (seconds waited, attempts, 429s seen, parks). With ``stream``, the
    provider's events go to the task's relay stream as they arrive
    (workers/relay.py), and the response is what they add up to."""
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
        stream,
    )
    if not stream:
        result = self.run_completion(call, throttle_state)
    else:
        context = worker_context(self.app)
        relay = StreamRelay(
            context.client,
            relay_key(context.config.redis.prefix, self.request.id),
            keep_usage_chunk=wants_usage_chunk(call.params),
            worker=self.request.hostname,
        )
        try:
            result = self.run_completion(call, throttle_state, relay.events)
        except TaskPredicate:  # a retry or a re-queue: the task runs again, and relays
            relay.stop()
            raise
        except Exception as exc:  # any failure ends the reader's wait at once
            relay.fail(exc)
            raise
        relay.end(result["usage"])
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
    credential: str | None = None,
    stream: bool = False,
) -> None:
    """Reject a request that could never run, before anything is queued: an unknown
    provider, model, lane or credential (of a group with several), malformed messages
    or params, a cost above a limit's capacity, a stream from a provider that cannot."""
    settings = config.group_for(provider, model)
    if settings.credentials and credential is not None and credential not in settings.credentials:
        raise InvalidRequestError(
            f"credential {credential!r} is not one of group {settings.name!r}'s"
            f" ({', '.join(settings.credentials)})"
        )
    try:
        config.scheduler.lane(lane)
    except ConfigError as exc:
        raise InvalidRequestError(str(exc)) from None
    profile = config.providers[settings.provider].resolved_profile()
    if stream:
        check_streamable(profile)
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
    # (every credential of a group has the same limits)
    group = config.limit_group(settings, tenant, (settings.credentials or (None,))[0])
    estimate = _ESTIMATOR.estimate_messages(model, messages)
    reservation = profile.reserve(input_tokens=estimate, max_tokens=max_tokens, params=params)
    costs = config.costs_for(settings, group, reservation.costs)
    for dim in group.dimensions:
        cost, capacity = costs.get(dim.name, 0.0), group.usable_capacity(dim)
        if cost > capacity:
            raise CostExceedsCapacityError(group.name, dim.name, cost, capacity)


#: Top-level keywords of the providers' SDKs that ``enqueue`` passes to the provider
#: (as ``params`` would): OpenAI's and Azure's chat completions, Anthropic's messages,
#: and common OpenAI-compatible extras. Any other unknown keyword is refused.
SDK_PARAMETERS = frozenset(
    {
        # OpenAI / Azure / compatible servers
        "temperature", "top_p", "n", "stop", "presence_penalty", "frequency_penalty",
        "logit_bias", "logprobs", "top_logprobs", "seed", "response_format", "tools",
        "tool_choice", "parallel_tool_calls", "user", "service_tier", "store",
        "reasoning_effort", "modalities", "prediction", "audio", "best_of",
        "web_search_options", "verbosity",
        # Anthropic
        "system", "top_k", "stop_sequences", "thinking",
        # Gemini (generateContent)
        "generationConfig", "safetySettings", "systemInstruction", "toolConfig",
    }
)  # fmt: skip

#: ``apply_async`` options ``enqueue`` takes (Celery's own meaning).
CELERY_OPTIONS = frozenset(
    {
        "task_id", "countdown", "eta", "expires", "priority", "headers", "link",
        "link_error", "time_limit", "soft_time_limit", "ignore_result",
    }
)  # fmt: skip


def split_keywords(
    extra: Mapping[str, Any], params: Mapping[str, Any] | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``enqueue``'s extra keywords as (provider params, Celery options); an unknown
    one is an InvalidRequestError, never a silently dropped message property."""
    sdk = {k: v for k, v in extra.items() if k in SDK_PARAMETERS}
    options = {k: v for k, v in extra.items() if k in CELERY_OPTIONS}
    unknown = sorted(set(extra) - set(sdk) - set(options))
    if unknown:
        raise InvalidRequestError(
            f"unknown keyword(s) {unknown}: pass provider parameters by their SDK names or"
            " in params=, Celery options among " + ", ".join(sorted(CELERY_OPTIONS))
        )
    twice = sorted(set(sdk) & set(params or {}))
    if twice:
        raise InvalidRequestError(f"{twice} given both as a keyword and in params")
    return {**(params or {}), **sdk}, options


def output_limit(
    settings_default: int | None, max_tokens: int | None, max_completion_tokens: int | None
) -> int:
    """The request's output limit: ``max_tokens`` or its newer SDK name
    ``max_completion_tokens`` (the provider's own field is the profile's choice), else
    the group's ``default_max_tokens``."""
    both = max_tokens is not None and max_completion_tokens is not None
    if both and max_tokens != max_completion_tokens:
        raise InvalidRequestError("max_tokens and max_completion_tokens differ; give one")
    limit = max_tokens if max_tokens is not None else max_completion_tokens
    if limit is None:
        limit = settings_default
    if limit is None:
        raise InvalidRequestError(
            "max_tokens is required (or set default_max_tokens in the model's group)"
        )
    return limit


def sending_app() -> Any:
    """The Celery app a send goes through: the current app when it carries a throttle
    config (one :func:`workers.app.create_app` made) or names a broker (a user's own
    app, given ``load_config()``'s throttle config on first use); else, the current
    app being Celery's unconfigured fallback, the default app (from
    ``LLM_THROTTLE_CONFIG``: ``from tasks import enqueue`` is all a web app needs),
    which then becomes this thread's current app."""
    app = current_app._get_current_object()
    if has_config(app) or app.conf.broker_url:
        return app
    app = default_app()
    app.set_current()
    return app


def enqueue(
    *,
    provider: str,
    model: str,
    messages: Sequence[Message],
    max_tokens: int | None = None,
    max_completion_tokens: int | None = None,
    tenant: str | None = None,
    lane: str | None = None,
    credential: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    stream: bool = False,
    queue_seen_empty: bool = False,
    **keywords: Any,
) -> AsyncResult:
    """Validate and queue one completion; returns its ``AsyncResult``.

    Takes the SDK's shape: ``max_tokens`` (or ``max_completion_tokens``; default: the
    group's ``default_max_tokens``) and the provider's documented parameters as
    keywords (``temperature=0.2, tools=[...]``: :data:`SDK_PARAMETERS`), or any in
    ``params``. ``tenant`` names whose share it uses, ``lane`` its priority
    (``[scheduler]`` in the config; default the configured default lane). Celery
    options (:data:`CELERY_OPTIONS`: ``task_id``, ``countdown``, ``expires``...) go to
    ``apply_async``. Any other keyword is an InvalidRequestError. ``stream=True``:
    the worker streams from the provider and passes the events on through the task's
    relay stream (workers/relay.py; the gateway reads it) as they arrive.
    ``queue_seen_empty=True`` says the caller has just read the group's fair queue
    and found it empty (the gateway does): the send skips that read.
    """
    config = app_config(sending_app())
    params, options = split_keywords(keywords, params)
    settings = config.group_for(provider, model)
    limit = output_limit(settings.default_max_tokens, max_tokens, max_completion_tokens)
    if not isinstance(stream, bool):
        raise InvalidRequestError(f"stream must be true or false: {stream!r}")
    validate(config, provider, model, messages, limit, params, tenant, lane, credential, stream)
    kwargs = {
        "provider": provider,
        "model": model,
        "messages": list(messages),
        "max_tokens": limit,
        "tenant": tenant,
        "credential": credential,
        "metadata": dict(metadata) if metadata is not None else None,
        "params": params or None,
    }
    if lane is not None:
        kwargs["lane"] = lane
    if stream:
        kwargs["stream"] = True
    try:
        if queue_seen_empty:
            options["queue_seen_empty"] = True
        return complete.apply_async(
            kwargs=kwargs, argsrepr="()", kwargsrepr=kwargs_repr(kwargs), **options
        )
    except (OperationalError, RedisError, OSError, RuntimeError) as exc:
        # RuntimeError: Celery's Redis result backend gave up reconnecting.
        raise StorageError(f"broker unreachable, nothing was queued: {exc}") from exc

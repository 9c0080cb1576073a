"""A request body, as the OpenAI or Anthropic SDK sends it, into the throttled task's
arguments; which configured provider serves which model on which API. Pure."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import GatewayError, bad_request
from throttle.config import Config
from throttle.errors import ConfigError
from throttle.providers.streaming import stream_format

#: The APIs the gateway speaks: OpenAI's chat completions, Anthropic's messages.
OPENAI, ANTHROPIC = "openai", "anthropic"

#: Body fields that are the task's own arguments; every other one goes to the
#: provider as a parameter (temperature, tools, stream_options, system, metadata...).
OWN_FIELDS = frozenset({"model", "messages", "max_tokens", "max_completion_tokens", "stream"})


@dataclass(frozen=True)
class ModelIndex:
    """(api, model) -> the configured provider that serves it."""

    providers: Mapping[tuple[str, str], str]

    @classmethod
    def build(cls, config: Config, only: Sequence[str] | None = None) -> ModelIndex:
        served: dict[tuple[str, str], str] = {}
        for group in config.groups.values():
            if only is not None and group.provider not in only:
                continue
            api = stream_format(config.providers[group.provider].resolved_profile())
            if api is None:
                continue  # Gemini: not an API the gateway speaks
            for model in group.models:
                other = served.setdefault((api, model), group.provider)
                if other != group.provider:
                    raise ConfigError(
                        f"gateway: model {model!r} is served by providers {other!r} and"
                        f" {group.provider!r}; list one in gateway.providers"
                    )
        return cls(served)

    def provider_for(self, api: str, model: str) -> str:
        provider = self.providers.get((api, model))
        if provider is None:
            raise GatewayError(
                404,
                f"The model {model!r} does not exist or you do not have access to it.",
                code="model_not_found",
                param="model",
            )
        return provider

    def models(self) -> list[tuple[str, str]]:
        """(model, provider) of every model served, by name."""
        return sorted((model, provider) for (_, model), provider in self.providers.items())


@dataclass(frozen=True)
class ChatRequest:
    """The arguments of one throttled completion."""

    provider: str
    model: str
    messages: list[Mapping[str, Any]] = field(repr=False)
    max_tokens: int | None
    max_completion_tokens: int | None
    params: dict[str, Any] = field(repr=False)
    stream: bool


def decode_body(raw: bytes) -> dict[str, Any]:
    """The JSON object of a body; 400 otherwise."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"We could not parse the JSON body of your request: {exc}") from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    return body


def chat_request(api: str, body: Mapping[str, Any], index: ModelIndex) -> ChatRequest:
    """The completion ``body`` asks for (``api``: which API's shape it has)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("you must provide a model parameter", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' is required: a non-empty list of messages", "messages")
    if not all(isinstance(m, dict) for m in messages):
        raise bad_request("each of 'messages' must be an object", "messages")
    limits = {}
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise bad_request(f"'{name}' must be an integer", name)
        limits[name] = value
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise bad_request("'stream' must be a boolean", "stream")
    provider = index.provider_for(api, model)
    params = {k: v for k, v in body.items() if k not in OWN_FIELDS}
    return ChatRequest(
        provider,
        model,
        messages,
        limits["max_tokens"],
        limits["max_completion_tokens"],
        params,
        stream,
    )


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The caller's key: ``Authorization: Bearer`` (OpenAI) or ``x-api-key``
    (Anthropic)."""
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return headers.get("x-api-key") or None


def max_wait_s(headers: Mapping[str, str], default_s: float) -> float:
    """The caller's ``x-throttle-max-wait-s``, else the configured default."""
    text = headers.get("x-throttle-max-wait-s")
    if text is None:
        return default_s
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise bad_request("x-throttle-max-wait-s must be a number of seconds >= 0")
    return value

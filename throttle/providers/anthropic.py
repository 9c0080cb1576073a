"""Anthropic Messages API: ``POST {base}/v1/messages`` with ``x-api-key``.

System messages of the OpenAI-shaped input move to the top-level ``system`` field.
Limits are split into input (ITPM) and output (OTPM) token buckets, see
:class:`~throttle.providers.accounting.SplitTokens`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from throttle.errors import InvalidRequestError
from throttle.providers.accounting import Accounting, SplitTokens
from throttle.providers.credentials import Secret
from throttle.providers.headers import HeadersLike, HeaderView, parse_anthropic_headers
from throttle.providers.observation import (
    INPUT_TOKENS,
    OUTPUT_TOKENS,
    REQUESTS,
    TOKENS,
    Observation,
)
from throttle.providers.openai import JSON_HEADERS
from throttle.providers.profile import Profile, check_params
from throttle.providers.request import (
    AuthHeader,
    HttpRequest,
    Message,
    check_chat,
    join_url,
    message_text,
)
from throttle.providers.usage import Usage, anthropic_usage


@dataclass(frozen=True)
class AnthropicProfile(Profile):
    """Anthropic Messages (output accounting: :class:`SplitTokens`)."""

    name: str = "anthropic"
    dimensions: tuple[str, ...] = (REQUESTS, INPUT_TOKENS, OUTPUT_TOKENS, TOKENS)
    default_base_url: str | None = "https://api.anthropic.com"
    accounting: Accounting = field(default_factory=SplitTokens)
    api_version: str = "2023-06-01"

    def build_request(
        self,
        *,
        base_url: str,
        model: str,
        messages: Sequence[Message],
        max_tokens: int,
        params: Mapping[str, object],
        api_key: Secret | None,
    ) -> HttpRequest:
        check_chat(messages, max_tokens)
        check_params(params)
        system = [message_text(m) for m in messages if m.get("role") == "system"]
        turns = [dict(m) for m in messages if m.get("role") != "system"]
        if not turns:
            raise InvalidRequestError("anthropic needs at least one non-system message")
        body: dict[str, object] = {"model": model, "max_tokens": max_tokens, "messages": turns}
        if system:
            if "system" in params:
                raise InvalidRequestError("give the system prompt once: message or 'system' param")
            body["system"] = "\n\n".join(system)
        body.update(params)
        headers = {**JSON_HEADERS, "anthropic-version": self.api_version}
        auth = None if api_key is None else AuthHeader("x-api-key", api_key)
        return HttpRequest("POST", join_url(base_url, "/v1/messages"), headers, body, auth)

    def parse_usage(self, body: object) -> Usage | None:
        return anthropic_usage(body)

    def parse_headers(
        self, headers: HeadersLike | HeaderView | None, *, received_at: float
    ) -> Observation:
        return parse_anthropic_headers(headers, received_at=received_at)

    def output_budget(self, max_tokens: int, params: Mapping[str, object]) -> float:
        return float(max_tokens)  # Anthropic has no ``n``

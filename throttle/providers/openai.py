"""OpenAI chat completions, Azure OpenAI, and OpenAI-compatible servers (vLLM, Groq...).

All share the request and response shape (``/v1/chat/completions``, ``usage.
prompt_tokens`` / ``completion_tokens``) and up-front output accounting; they differ in
URL, auth header and how their limit headers read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

from throttle.providers.accounting import Accounting, UpfrontTokens
from throttle.providers.credentials import Secret
from throttle.providers.headers import (
    GROQ_SUFFIXES,
    OPENAI_SUFFIXES,
    HeadersLike,
    HeaderView,
    parse_azure_headers,
    parse_openai_headers,
)
from throttle.providers.observation import (
    REQUESTS,
    REQUESTS_DAY,
    TOKENS,
    TOKENS_DAY,
    Observation,
)
from throttle.providers.profile import Profile, check_params, positive_int_param
from throttle.providers.request import AuthHeader, HttpRequest, Message, check_chat, join_url
from throttle.providers.usage import Usage, openai_usage

JSON_HEADERS: Mapping[str, str] = {
    "content-type": "application/json",
    "accept": "application/json",
}


def chat_body(
    model: str,
    messages: Sequence[Message],
    max_tokens: int,
    params: Mapping[str, object],
    *,
    max_tokens_field: str,
) -> dict[str, object]:
    check_chat(messages, max_tokens)
    check_params(params)
    return {
        "model": model,
        "messages": [dict(m) for m in messages],
        max_tokens_field: max_tokens,
        **params,
    }


@dataclass(frozen=True)
class OpenAIProfile(Profile):
    """OpenAI ``POST {base}/v1/chat/completions`` with ``Authorization: Bearer``.

    Use ``max_tokens_field="max_completion_tokens"`` for reasoning models, which refuse
    ``max_tokens``.
    """

    name: str = "openai"
    dimensions: tuple[str, ...] = (REQUESTS, TOKENS, REQUESTS_DAY, TOKENS_DAY)
    default_base_url: str | None = "https://api.openai.com"
    accounting: Accounting = field(default_factory=UpfrontTokens)
    path: str = "/v1/chat/completions"
    max_tokens_field: str = "max_tokens"
    #: Header suffix -> dimension (Groq's request headers are per day).
    header_suffixes: Mapping[str, str] = field(default_factory=lambda: dict(OPENAI_SUFFIXES))
    requires_key: bool = True

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
        body = chat_body(
            model, messages, max_tokens, params, max_tokens_field=self.max_tokens_field
        )
        auth = None if api_key is None else AuthHeader("authorization", api_key, "Bearer ")
        return HttpRequest("POST", join_url(base_url, self.path), JSON_HEADERS, body, auth)

    def parse_usage(self, body: object) -> Usage | None:
        return openai_usage(body)

    def parse_headers(
        self, headers: HeadersLike | HeaderView | None, *, received_at: float
    ) -> Observation:
        return parse_openai_headers(headers, received_at=received_at, suffixes=self.header_suffixes)


@dataclass(frozen=True)
class AzureOpenAIProfile(OpenAIProfile):
    """Azure OpenAI: ``{base}/openai/deployments/{deployment}/chat/completions?api-version=``.

    The deployment is ``deployments[model]``, or the model name itself. The key goes in
    the ``api-key`` header. Resets are integer seconds. Admission counts
    ``max(n, best_of) x max_tokens`` of output: Azure's estimate includes ``best_of``,
    which generates that many completions server-side.
    """

    name: str = "azure"
    dimensions: tuple[str, ...] = (REQUESTS, TOKENS)
    default_base_url: str | None = None
    api_version: str = "2024-10-21"
    deployments: Mapping[str, str] = field(default_factory=dict)

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
        body = chat_body(
            model, messages, max_tokens, params, max_tokens_field=self.max_tokens_field
        )
        deployment = quote(self.deployments.get(model, model), safe="")
        query = urlencode({"api-version": self.api_version})
        url = join_url(base_url, f"/openai/deployments/{deployment}/chat/completions?{query}")
        auth = None if api_key is None else AuthHeader("api-key", api_key)
        return HttpRequest("POST", url, JSON_HEADERS, body, auth)

    def output_budget(self, max_tokens: int, params: Mapping[str, object]) -> float:
        copies = max(positive_int_param(params, "n"), positive_int_param(params, "best_of"))
        return float(max_tokens * copies)

    def parse_headers(
        self, headers: HeadersLike | HeaderView | None, *, received_at: float
    ) -> Observation:
        return parse_azure_headers(headers, received_at=received_at)


def compatible_profile(
    name: str,
    *,
    default_base_url: str | None = None,
    requires_key: bool = False,
) -> OpenAIProfile:
    """A generic OpenAI-compatible server (vLLM, Together, OpenRouter...)."""
    return OpenAIProfile(
        name=name,
        default_base_url=default_base_url,
        accounting=UpfrontTokens(),
        requires_key=requires_key,
    )


def groq_profile() -> OpenAIProfile:
    """Groq: OpenAI names, but ``x-ratelimit-*-requests`` is the per-day bucket."""
    return OpenAIProfile(
        name="groq",
        dimensions=(REQUESTS, REQUESTS_DAY, TOKENS, TOKENS_DAY),
        default_base_url="https://api.groq.com/openai",
        header_suffixes=dict(GROQ_SUFFIXES),
    )

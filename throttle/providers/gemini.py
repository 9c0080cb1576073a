"""Google Gemini ``generateContent``: ``POST {base}/v1beta/models/{model}:generateContent``.

The key goes in the ``x-goog-api-key`` header (never the ``?key=`` query string, which
ends up in access logs). OpenAI-shaped messages become ``contents`` with roles ``user``
and ``model``; system messages become ``systemInstruction``. Sampling params go into
``generationConfig`` (snake_case names are translated); other params stay top-level.

Gemini sends no limit headers. The only signal is the 429 body's
``RetryInfo.retryDelay``, which :meth:`GeminiProfile.parse_observation` reports as
``retry_after_s``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from urllib.parse import quote

from throttle.providers.accounting import Accounting, InputOnlyTokens
from throttle.providers.credentials import Secret
from throttle.providers.errorbody import parse_error_body
from throttle.providers.headers import HeadersLike, HeaderView, parse_no_headers
from throttle.providers.observation import REQUESTS, REQUESTS_DAY, TOKENS, Observation
from throttle.providers.openai import JSON_HEADERS
from throttle.providers.profile import Body, Profile, check_params
from throttle.providers.request import (
    AuthHeader,
    HttpRequest,
    Message,
    check_chat,
    join_url,
    message_text,
)
from throttle.providers.usage import Usage, gemini_usage

#: Caller param -> ``generationConfig`` field.
GENERATION_CONFIG: Mapping[str, str] = {
    "temperature": "temperature",
    "top_p": "topP",
    "topP": "topP",
    "top_k": "topK",
    "topK": "topK",
    "stop": "stopSequences",
    "stopSequences": "stopSequences",
    "n": "candidateCount",
    "candidateCount": "candidateCount",
    "seed": "seed",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
    "response_mime_type": "responseMimeType",
    "responseMimeType": "responseMimeType",
}


def _contents(messages: Sequence[Message]) -> list[dict[str, object]]:
    return [
        {
            "role": "model" if m.get("role") == "assistant" else "user",
            "parts": [{"text": message_text(m)}],
        }
        for m in messages
        if m.get("role") != "system"
    ]


@dataclass(frozen=True)
class GeminiProfile(Profile):
    name: str = "gemini"
    dimensions: tuple[str, ...] = (REQUESTS, TOKENS, REQUESTS_DAY)
    default_base_url: str | None = "https://generativelanguage.googleapis.com"
    accounting: Accounting = field(default_factory=InputOnlyTokens)
    api_version: str = "v1beta"

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
        config: dict[str, object] = {"maxOutputTokens": max_tokens}
        body: dict[str, object] = {"contents": _contents(messages)}
        for key, value in params.items():
            if key in GENERATION_CONFIG:
                config[GENERATION_CONFIG[key]] = value
            else:
                body[key] = value
        system = [message_text(m) for m in messages if m.get("role") == "system"]
        if system:
            body["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
        body["generationConfig"] = config
        path = f"/{self.api_version}/models/{quote(model, safe='')}:generateContent"
        auth = None if api_key is None else AuthHeader("x-goog-api-key", api_key)
        return HttpRequest("POST", join_url(base_url, path), JSON_HEADERS, body, auth)

    def parse_usage(self, body: object) -> Usage | None:
        return gemini_usage(body)

    def parse_headers(
        self, headers: HeadersLike | HeaderView | None, *, received_at: float
    ) -> Observation:
        return parse_no_headers(headers, received_at=received_at)

    def parse_observation(
        self, headers: HeadersLike | HeaderView | None, body: Body, *, received_at: float
    ) -> Observation:
        observation = self.parse_headers(headers, received_at=received_at)
        if observation.retry_after_s is None:
            delay_s = parse_error_body(body).retry_delay_s
            if delay_s is not None:
                return replace(observation, retry_after_s=delay_s)
        return observation

    def output_budget(self, max_tokens: int, params: Mapping[str, object]) -> float:
        return 0.0  # output is not rate-limited; InputOnlyTokens ignores it anyway

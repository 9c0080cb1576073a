"""Read a completion request body into a :class:`Call` and price it per provider (spec §8).

A body may carry an emulator-only ``"emulator"`` object that scripts the token counts:
``{"input_tokens": n, "output_tokens": n, "cache_creation_input_tokens": n,
"cache_read_input_tokens": n}``. Without it, input is ``ceil(chars / chars_per_token)``
and output is ``max_tokens`` times a fraction derived from a hash of the body, so the
same request always produces the same usage.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from testing.emulator.config import EmulatorConfig
from testing.emulator.kinds import OutputMode, Profile


class InvalidBodyError(ValueError):
    """The request body is not a valid completion request for its route."""


@dataclass(frozen=True)
class Call:
    """One completion request, with its token counts decided up front."""

    profile: Profile
    model: str
    input_tokens: int
    cache_creation_tokens: int
    cache_read_tokens: int
    #: Per choice; ``max_tokens_given`` is False when the default was used.
    max_tokens: int
    max_tokens_given: bool
    n: int
    best_of: int
    #: Total over all choices, never above ``n * max_tokens``.
    output_tokens: int
    #: ``"stream": true``: answered as server-sent events (OpenAI, Azure, Anthropic).
    stream: bool = False
    #: OpenAI's ``stream_options.include_usage``: a last chunk carries the usage.
    include_usage: bool = False


def parse_call(
    profile: Profile, body: bytes, data: object, path_model: str | None, config: EmulatorConfig
) -> Call:
    """Build a :class:`Call` from the decoded JSON ``data`` of ``body``."""
    if not isinstance(data, dict):
        raise InvalidBodyError("request body must be a JSON object")
    if profile is Profile.GEMINI:
        chars = _gemini_chars(data)
        gen = data.get("generationConfig") or {}
        if not isinstance(gen, dict):
            raise InvalidBodyError("generationConfig must be an object")
        raw_max = gen.get("maxOutputTokens")
        n = _positive_int(gen.get("candidateCount", 1), "candidateCount")
        best_of = n
    else:
        chars = _chat_chars(data)
        raw_max = data.get("max_completion_tokens", data.get("max_tokens"))
        n = _positive_int(data.get("n", 1), "n")
        best_of = max(n, _positive_int(data.get("best_of", 1), "best_of"))
    model = path_model if path_model is not None else data.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidBodyError("'model' is required")
    if raw_max is None:
        max_tokens, given = config.default_max_tokens, False
    else:
        max_tokens, given = _positive_int(raw_max, "max_tokens"), True
    script = data.get("emulator") or {}
    if not isinstance(script, dict):
        raise InvalidBodyError("'emulator' must be an object")
    input_tokens = _count(script, "input_tokens", math.ceil(chars / config.chars_per_token))
    output_tokens = _count(script, "output_tokens", -1)
    if output_tokens < 0:
        output_tokens = n * sampled_output_tokens(body, max_tokens, config)
    stream, include_usage = _stream_flags(data) if profile is not Profile.GEMINI else (False, False)
    return Call(
        profile=profile,
        model=model,
        input_tokens=input_tokens,
        cache_creation_tokens=_count(script, "cache_creation_input_tokens", 0),
        cache_read_tokens=_count(script, "cache_read_input_tokens", 0),
        max_tokens=max_tokens,
        max_tokens_given=given,
        n=n,
        best_of=best_of,
        output_tokens=min(output_tokens, n * max_tokens),
        stream=stream,
        include_usage=include_usage,
    )


def _stream_flags(data: Mapping[str, Any]) -> tuple[bool, bool]:
    """``stream`` and ``stream_options.include_usage`` of a chat body."""
    stream = data.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise InvalidBodyError("'stream' must be a boolean")
    options = data.get("stream_options") or {}
    if not isinstance(options, dict):
        raise InvalidBodyError("'stream_options' must be an object")
    return stream, stream and options.get("include_usage") is True


def sampled_output_tokens(body: bytes, max_tokens: int, config: EmulatorConfig) -> int:
    """Output tokens of one choice: ``max_tokens`` x a fraction fixed by the body's hash."""
    digest = hashlib.blake2b(body, digest_size=8, key=config.seed.to_bytes(8, "little")).digest()
    unit = int.from_bytes(digest, "little") / 2.0**64
    lo, hi = config.latency.output_fraction_min, config.latency.output_fraction_max
    return max(1, min(max_tokens, math.ceil(max_tokens * (lo + (hi - lo) * unit))))


def admission_costs(call: Call, config: EmulatorConfig) -> dict[str, float]:
    """Cost per cost kind charged at admission (spec §8 "Costs")."""
    if call.profile is Profile.ANTHROPIC:
        input_cost = float(call.input_tokens + call.cache_creation_tokens)
        output_cost = float(call.max_tokens) if config.output_mode is OutputMode.RESERVE else 0.0
        return {
            "requests": 1.0,
            "input_tokens": input_cost,
            "output_tokens": output_cost,
            "tokens": input_cost + output_cost,
        }
    if call.profile is Profile.GEMINI:
        return {
            "requests": 1.0,
            "tokens": float(call.input_tokens),
            "input_tokens": float(call.input_tokens),
            "output_tokens": 0.0,
        }
    choices = call.best_of if call.profile is Profile.AZURE else call.n
    output_cost = float(choices * call.max_tokens)
    return {
        "requests": 1.0,
        "tokens": call.input_tokens + output_cost,
        "input_tokens": float(call.input_tokens),
        "output_tokens": output_cost,
    }


def settlement_costs(call: Call, config: EmulatorConfig) -> dict[str, float]:
    """Extra debit per cost kind when the response completes (negative = refund).

    Only Anthropic settles: realtime debits the actual output, reserve refunds the
    unused part of max_tokens. OpenAI and Azure never refund (``refund_unused`` off).
    """
    if call.profile is not Profile.ANTHROPIC:
        return {}
    if config.output_mode is OutputMode.RESERVE:
        delta = float(call.output_tokens - call.max_tokens)
    else:
        delta = float(call.output_tokens)
    return {"output_tokens": delta, "tokens": delta} if delta else {}


def gated_kinds(call: Call, config: EmulatorConfig) -> frozenset[str]:
    """Cost kinds whose bucket must be above 0 to admit (Anthropic realtime output)."""
    if call.profile is Profile.ANTHROPIC and config.output_mode is OutputMode.REALTIME:
        return frozenset({"output_tokens"})
    return frozenset()


def _chat_chars(data: Mapping[str, Any]) -> int:
    chars = _content_chars(data.get("system"))
    messages = data.get("messages")
    if not isinstance(messages, list):
        raise InvalidBodyError("'messages' must be a list")
    for message in messages:
        if not isinstance(message, dict):
            raise InvalidBodyError("each message must be an object")
        chars += _content_chars(message.get("content"))
    return chars


def _gemini_chars(data: Mapping[str, Any]) -> int:
    contents = data.get("contents")
    if not isinstance(contents, list):
        raise InvalidBodyError("'contents' must be a list")
    chars = 0
    for content in [*contents, data.get("systemInstruction")]:
        if isinstance(content, dict):
            chars += _content_chars(content.get("parts"))
    return chars


def _content_chars(content: object) -> int:
    """Characters of text in a string, a list of parts/blocks, or nothing."""
    if content is None:
        return 0
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, str):
                total += len(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                total += len(part["text"])
        return total
    raise InvalidBodyError("message content must be a string or a list of parts")


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidBodyError(f"'{name}' must be a positive integer")
    return value


def _count(script: Mapping[str, Any], name: str, default: int) -> int:
    value = script.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or (value < 0 and value != default):
        raise InvalidBodyError(f"'emulator.{name}' must be a non-negative integer")
    return value

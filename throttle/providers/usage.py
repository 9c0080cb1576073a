"""Token usage as each provider reports it, normalised to input and output tokens.

=========  ======================================  =====================================
provider   where                                   fields
=========  ======================================  =====================================
OpenAI     ``usage``                               ``prompt_tokens`` (incl. cached),
(Azure,                                            ``completion_tokens``,
compatible)                                        ``prompt_tokens_details.cached_tokens``
Anthropic  ``usage``                               ``input_tokens`` (uncached only),
                                                   ``cache_creation_input_tokens``,
                                                   ``cache_read_input_tokens``,
                                                   ``output_tokens``
Gemini     ``usageMetadata``                       ``promptTokenCount``,
                                                   ``candidatesTokenCount`` +
                                                   ``thoughtsTokenCount``,
                                                   ``cachedContentTokenCount``
=========  ======================================  =====================================

Extractors are total: a body without usable usage gives ``None``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Usage:
    """Tokens one completion consumed.

    ``input_tokens`` is *every* prompt token the model processed, cached or not (for
    Anthropic that is ``input + cache_creation + cache_read``), so the same number means
    the same thing for every provider. The cache fields say how much of it was cached.
    """

    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def _count(mapping: object, *path: str) -> int | None:
    value: object = mapping
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not 0 <= value < 1e12 or value != value:
        return None
    return int(value)


def openai_usage(body: object) -> Usage | None:
    """``usage`` of an OpenAI-style chat completion."""
    if not isinstance(body, Mapping):
        return None
    usage = body.get("usage")
    prompt = _count(usage, "prompt_tokens")
    completion = _count(usage, "completion_tokens")
    if prompt is None or completion is None:
        return None
    cached = _count(usage, "prompt_tokens_details", "cached_tokens") or 0
    return Usage(prompt, completion, cache_read_input_tokens=min(cached, prompt))


def anthropic_usage(body: object) -> Usage | None:
    """``usage`` of an Anthropic message."""
    if not isinstance(body, Mapping):
        return None
    usage = body.get("usage")
    uncached = _count(usage, "input_tokens")
    output = _count(usage, "output_tokens")
    if uncached is None or output is None:
        return None
    created = _count(usage, "cache_creation_input_tokens") or 0
    read = _count(usage, "cache_read_input_tokens") or 0
    return Usage(uncached + created + read, output, read, created)


def gemini_usage(body: object) -> Usage | None:
    """``usageMetadata`` of a Gemini ``generateContent`` response."""
    if not isinstance(body, Mapping):
        return None
    metadata = body.get("usageMetadata")
    prompt = _count(metadata, "promptTokenCount")
    if prompt is None:
        return None
    candidates = _count(metadata, "candidatesTokenCount") or 0
    thoughts = _count(metadata, "thoughtsTokenCount") or 0
    cached = _count(metadata, "cachedContentTokenCount") or 0
    return Usage(prompt, candidates + thoughts, cache_read_input_tokens=min(cached, prompt))

"""Streamed completions: the request that asks for a stream, and what its events add up to.

OpenAI-style servers (OpenAI, Azure, compatible ones) send ``chat.completion.chunk``
events and ``[DONE]``; usage comes in a last chunk only when the request says
``stream_options.include_usage``, so a streamed request always asks for it (the
throttle settles on it). Anthropic sends ``message_start`` (input usage) ...
``message_delta`` (output usage) ``message_stop``. A :class:`StreamTally` reads the
events as they pass and assembles the body the provider would have sent unstreamed
(text, finish reasons, usage), which the profile's ``parse_usage`` then reads.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from throttle.errors import InvalidRequestError
from throttle.providers.anthropic import AnthropicProfile
from throttle.providers.openai import OpenAIProfile
from throttle.providers.profile import Profile
from throttle.providers.request import HttpRequest
from throttle.providers.sse import SseEvent


class StreamError(Exception):
    """An error event inside a stream; ``body`` is its decoded data."""

    def __init__(self, body: object) -> None:
        super().__init__(str(body)[:300])
        self.body = body


def stream_format(profile: Profile) -> str | None:
    """``openai``, ``anthropic``, or None for a profile whose stream we do not read."""
    if isinstance(profile, AnthropicProfile):
        return "anthropic"
    if isinstance(profile, OpenAIProfile):
        return "openai"
    return None


def check_streamable(profile: Profile) -> None:
    if stream_format(profile) is None:
        raise InvalidRequestError(f"provider profile {profile.name!r} cannot stream here")


def streaming_request(profile: Profile, request: HttpRequest) -> HttpRequest:
    """``request`` asking for a stream (and, OpenAI-style, the usage at its end)."""
    check_streamable(profile)
    body: dict[str, object] = {**request.json, "stream": True}
    if stream_format(profile) == "openai":
        options = body.get("stream_options")
        options = dict(options) if isinstance(options, dict) else {}
        body["stream_options"] = {**options, "include_usage": True}
    return dataclasses.replace(request, json=body)


def is_usage_only(event: SseEvent) -> bool:
    """An OpenAI-style chunk with usage and no choices: the one ``include_usage`` adds."""
    if event.data[:1] != "{" or '"usage"' not in event.data:
        return False
    try:
        body = json.loads(event.data)
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("choices") == [] and body.get("usage") is not None


class StreamTally:
    """Reads a stream's events; :meth:`body` is the unstreamed body they add up to."""

    def __init__(self, profile: Profile) -> None:
        fmt = stream_format(profile)
        if fmt is None:
            raise InvalidRequestError(f"provider profile {profile.name!r} cannot stream here")
        self.format = fmt
        self.events = 0
        self.done = False
        self._head: dict[str, Any] = {}
        self._texts: dict[int, list[str]] = {}
        self._finish: dict[int, Any] = {}
        self._usage: dict[str, Any] | None = None

    def add(self, event: SseEvent) -> None:
        """Take one event in; StreamError for an error event."""
        self.events += 1
        if event.data == "[DONE]":
            self.done = True
            return
        try:
            data = json.loads(event.data)
        except ValueError:
            return  # a keep-alive or a line we do not read
        if not isinstance(data, dict):
            return
        if event.event == "error" or data.get("type") == "error" or "error" in data:
            raise StreamError(data)
        if self.format == "openai":
            self._add_openai(data)
        else:
            self._add_anthropic(data)

    def _add_openai(self, data: dict[str, Any]) -> None:
        if not self._head:
            self._head = {k: data.get(k) for k in ("id", "created", "model")}
        for choice in data.get("choices") or ():
            index = int(choice.get("index", 0))
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str):
                self._texts.setdefault(index, []).append(delta["content"])
            if choice.get("finish_reason") is not None:
                self._finish[index] = choice["finish_reason"]
        if isinstance(data.get("usage"), dict):
            self._usage = data["usage"]

    def _add_anthropic(self, data: dict[str, Any]) -> None:
        kind = data.get("type")
        if kind == "message_start":
            message = data.get("message") or {}
            self._head = {k: message.get(k) for k in ("id", "model")}
            self._usage = dict(message.get("usage") or {})
        elif kind == "content_block_delta":
            delta = data.get("delta") or {}
            if isinstance(delta.get("text"), str):
                self._texts.setdefault(int(data.get("index", 0)), []).append(delta["text"])
        elif kind == "message_delta":
            self._finish[0] = (data.get("delta") or {}).get("stop_reason")
            self._usage = {**(self._usage or {}), **(data.get("usage") or {})}
        elif kind == "message_stop":
            self.done = True

    def body(self) -> dict[str, Any]:
        """The unstreamed body: the text and finish reason of each choice, the usage."""
        if self.format == "anthropic":
            text = "".join("".join(self._texts[i]) for i in sorted(self._texts))
            return {
                **self._head,
                "type": "message",
                "role": "assistant",
                "content": [{"type": "text", "text": text}],
                "stop_reason": self._finish.get(0),
                "usage": self._usage,
            }
        indexes = sorted(set(self._texts) | set(self._finish))
        return {
            **self._head,
            "object": "chat.completion",
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": "".join(self._texts.get(i, []))},
                    "finish_reason": self._finish.get(i),
                }
                for i in indexes
            ],
            "usage": self._usage,
        }

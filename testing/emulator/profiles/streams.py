"""Streamed answers (``"stream": true``) as the providers send them: server-sent events.

Each event comes with its phase, which the engine turns into a time: ``start`` events
go out at the time to first token, ``content`` events spread evenly over the
generation time, ``end`` events when the response is complete (the latency model of
the non-streamed answer, ``ttft_ms + output_tokens / tokens_per_s``).
"""

from __future__ import annotations

from collections.abc import Sequence

from testing.emulator.calls import Call
from testing.emulator.profiles.base import COMPLETION_TEXT
from testing.emulator.replies import sse_event

#: (phase, event bytes); the phase is ``start``, ``content`` or ``end``.
Events = list[tuple[str, bytes]]


def text_pieces(text: str = COMPLETION_TEXT) -> list[str]:
    """The completion text as the deltas of a stream: one word (and its space) each."""
    words = text.split(" ")
    return [word + " " for word in words[:-1]] + [words[-1]]


def openai_stream(
    call: Call, request_id: str, wall_s: float, per_choice_tokens: list[int]
) -> Events:
    """``chat.completion.chunk`` events: the role, the text word by word, the finish
    reason per choice, the usage chunk (with ``stream_options.include_usage``), and
    ``[DONE]``."""
    base = {
        "id": "chatcmpl-" + request_id[4:],
        "object": "chat.completion.chunk",
        "created": int(wall_s),
        "model": call.model,
        "system_fingerprint": "fp_emulator",
    }
    usage_field = {"usage": None} if call.include_usage else {}

    def chunk(index: int, delta: dict[str, object], finish: str | None) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return sse_event({**base, "choices": [choice], **usage_field})

    choices = range(call.n)
    events: Events = [
        ("start", chunk(i, {"role": "assistant", "content": ""}, None)) for i in choices
    ]
    for piece in text_pieces():
        events += [("content", chunk(i, {"content": piece}, None)) for i in choices]
    events += [
        ("end", chunk(i, {}, "length" if tokens >= call.max_tokens else "stop"))
        for i, tokens in zip(choices, per_choice_tokens, strict=True)
    ]
    if call.include_usage:
        usage = {
            "prompt_tokens": call.input_tokens,
            "completion_tokens": call.output_tokens,
            "total_tokens": call.input_tokens + call.output_tokens,
            "prompt_tokens_details": {"cached_tokens": call.cache_read_tokens},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }
        events.append(("end", sse_event({**base, "choices": [], "usage": usage})))
    events.append(("end", sse_event("[DONE]")))
    return events


def anthropic_stream(call: Call, request_id: str) -> Events:
    """Anthropic's message events: ``message_start`` (the input usage), one text block
    word by word, ``message_delta`` (the stop reason and the output usage),
    ``message_stop``."""
    message: dict[str, object] = {
        "id": "msg_" + request_id[4:],
        "type": "message",
        "role": "assistant",
        "model": call.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": call.input_tokens,
            "cache_creation_input_tokens": call.cache_creation_tokens,
            "cache_read_input_tokens": call.cache_read_tokens,
            "output_tokens": 1,
        },
    }
    block_start = {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    events: Events = [
        ("start", sse_event({"type": "message_start", "message": message}, "message_start")),
        ("start", sse_event(block_start, "content_block_start")),
        ("start", sse_event({"type": "ping"}, "ping")),
    ]
    for piece in text_pieces():
        delta = {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": piece},
        }
        events.append(("content", sse_event(delta, "content_block_delta")))
    stop = "max_tokens" if call.output_tokens >= call.max_tokens else "end_turn"
    message_delta = {
        "type": "message_delta",
        "delta": {"stop_reason": stop, "stop_sequence": None},
        "usage": {"output_tokens": call.output_tokens},
    }
    events += [
        ("end", sse_event({"type": "content_block_stop", "index": 0}, "content_block_stop")),
        ("end", sse_event(message_delta, "message_delta")),
        ("end", sse_event({"type": "message_stop"}, "message_stop")),
    ]
    return events


def schedule(
    events: Sequence[tuple[str, bytes]], ttft_s: float, generation_s: float
) -> tuple[tuple[float, bytes], ...]:
    """When each event goes out, seconds after the head: ``start`` at ``ttft_s``,
    ``content`` spread over ``generation_s`` after it (the first at ``ttft_s``), ``end``
    at ``ttft_s + generation_s``."""
    content = sum(1 for phase, _ in events if phase == "content")
    timed: list[tuple[float, bytes]] = []
    k = 0
    for phase, data in events:
        if phase == "start":
            at_s = ttft_s
        elif phase == "content":
            at_s = ttft_s + generation_s * k / content
            k += 1
        else:
            at_s = ttft_s + generation_s
        timed.append((at_s, data))
    return tuple(timed)

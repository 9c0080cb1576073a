"""What the emulator answers, independent of how it is sent."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Reply:
    """A complete HTTP answer, or ``drop=True`` to close the connection without one."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    drop: bool = False

    def header(self, name: str) -> str | None:
        """First value of header ``name`` (case-insensitive), if present."""
        lowered = name.lower()
        return next((v for k, v in self.headers if k.lower() == lowered), None)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Deferred:
    """An answer that is ready only after ``delay_s`` seconds (simulated generation).

    The sender waits ``delay_s`` and then calls ``complete()``, which settles the
    request's post-hoc debits and builds the :class:`Reply` at that moment.
    """

    delay_s: float
    complete: Callable[[], Reply]


@dataclass(frozen=True)
class Streamed:
    """A response whose body goes out in chunks over time (server-sent events).

    The head is sent at once; each chunk ``(at_s, data)`` is sent ``at_s`` seconds after
    it (chunked transfer encoding); ``finish()`` runs once the last one is out (the
    request's post-hoc debits, the statistics).
    """

    status: int
    headers: list[tuple[str, str]]
    chunks: tuple[tuple[float, bytes], ...]
    finish: Callable[[], None]


def sse_event(data: object, event: str | None = None) -> bytes:
    """One server-sent event: ``event: <name>`` (if given) and ``data: <json>``."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {text}\n\n".encode()


def json_bytes(body: object) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def json_reply(status: int, body: object) -> Reply:
    return Reply(status, [("content-type", "application/json")], json_bytes(body))

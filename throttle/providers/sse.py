"""Server-sent events: split a byte stream into events (the providers' streams).

Pure and incremental: :meth:`SseParser.feed` takes whatever the socket gave and returns
the events it completed; each keeps its raw bytes, so a relay can pass them on as the
provider sent them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_BOUNDARY = re.compile(rb"\r\n\r\n|\n\n|\r\r")


@dataclass(frozen=True)
class SseEvent:
    """One event: its ``event:`` name (None when absent), its ``data:`` lines joined
    with newlines, and the raw bytes (ending in a blank line)."""

    event: str | None
    data: str
    raw: bytes


def parse_event(block: bytes) -> SseEvent | None:
    """The event of one block (its lines, without the blank line); None for a block
    of comments only."""
    name: str | None = None
    data: list[str] = []
    for line in block.decode("utf-8", errors="replace").splitlines():
        if not line or line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
    if name is None and not data:
        return None
    return SseEvent(name, "\n".join(data), block + b"\n\n")


class SseParser:
    """Feed bytes in, get complete events out."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[SseEvent]:
        self._buffer += data
        events: list[SseEvent] = []
        while True:
            match = _BOUNDARY.search(self._buffer)
            if match is None:
                return events
            block, self._buffer = self._buffer[: match.start()], self._buffer[match.end() :]
            event = parse_event(block)
            if event is not None:
                events.append(event)

    @property
    def pending(self) -> bytes:
        """Bytes of an event not yet complete."""
        return self._buffer

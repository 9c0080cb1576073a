"""A small HTTP/1.1 server on asyncio protocols: keep-alive, Content-Length bodies.

It knows nothing about providers: a handler turns each :class:`HttpRequest` into a
:class:`Reply` (sent at once), a :class:`Deferred` (sent after its delay) or a
:class:`Streamed` (its head at once, its chunks over time, chunked). Requests on
one connection are answered in order; a pipelined request waits for the one before it.
Chunked request bodies are refused with 501.

Why not a library (issue 14, measured with ``bench/emulator.py``, 3 client processes x 8
keep-alive connections, rounds interleaved): a raw ASGI app on uvicorn with httptools
served 0.57-0.67x the requests/s of this module, aiohttp's low-level server 0.31-0.76x,
both for a task per request; h11 alone took about 12x the time of this parser per
request. Neither can drop a connection without an answer through its public API.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from testing.emulator.replies import Deferred, Reply, Streamed

log = logging.getLogger(__name__)

#: Largest request head (request line + headers) accepted, in bytes.
MAX_HEAD_BYTES = 64 * 1024
#: Largest request body accepted, in bytes.
MAX_BODY_BYTES = 16 * 1024 * 1024

REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    529: "Overloaded",
}


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    query: str
    #: Lower-case header names; the last value wins.
    headers: dict[str, str]
    body: bytes
    keep_alive: bool


Handler = Callable[[HttpRequest], Reply | Deferred | Streamed]


class _BadRequestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def encode_head(status: int, headers: list[tuple[str, str]], keep_alive: bool) -> bytes:
    """An HTTP/1.1 response's status line and headers, through the blank line."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if not keep_alive:
        lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def encode_reply(reply: Reply, keep_alive: bool) -> bytes:
    """Serialise a reply as an HTTP/1.1 response."""
    headers = [*reply.headers, ("content-length", str(len(reply.body)))]
    return encode_head(reply.status, headers, keep_alive) + reply.body


class HttpConnection(asyncio.Protocol):
    """One client connection."""

    def __init__(self, handler: Handler, live: set[HttpConnection] | None = None) -> None:
        self._handler = handler
        self._live = live if live is not None else set()
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._busy = False
        self._closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._live.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._transport = None
        self._live.discard(self)

    def abort(self) -> None:
        """Drop the connection at once (server shutdown)."""
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._busy:
            self._process()

    def _process(self) -> None:
        while not self._busy and not self._closed:
            try:
                request = self._parse_one()
            except _BadRequestError as exc:
                body = str(exc).encode()
                reply = Reply(exc.status, [("content-type", "text/plain")], body)
                self._send(reply, keep_alive=False)
                return
            if request is None:
                return
            try:
                result = self._handler(request)
            except Exception:
                log.exception("emulator handler failed on %s %s", request.method, request.path)
                result = Reply(500, [("content-type", "text/plain")], b"emulator error")
            if isinstance(result, Streamed):
                self._busy = True
                self._send_streamed(result, request.keep_alive)
                return
            if isinstance(result, Deferred):
                self._busy = True
                loop = asyncio.get_running_loop()
                loop.call_later(result.delay_s, self._send_deferred, result, request.keep_alive)
                return
            self._send(result, request.keep_alive)

    def _send_deferred(self, deferred: Deferred, keep_alive: bool) -> None:
        try:
            reply = deferred.complete()
        except Exception:
            log.exception("emulator deferred reply failed")
            reply = Reply(500, [("content-type", "text/plain")], b"emulator error")
        self._busy = False
        if not self._closed:
            self._send(reply, keep_alive)
            self._process()

    def _send_streamed(self, streamed: Streamed, keep_alive: bool) -> None:
        """The head now, each chunk at its time, then the last (empty) chunk."""
        transport = self._transport
        if transport is None:
            return
        headers = [*streamed.headers, ("transfer-encoding", "chunked")]
        transport.write(encode_head(streamed.status, headers, keep_alive))
        started_s = asyncio.get_running_loop().time()
        self._stream_step(streamed, 0, started_s, keep_alive)

    def _stream_step(
        self, streamed: Streamed, index: int, started_s: float, keep_alive: bool
    ) -> None:
        """Send every chunk that is due, in order, then wait for the next one."""
        loop = asyncio.get_running_loop()
        chunks = streamed.chunks
        due = bytearray()
        while index < len(chunks) and chunks[index][0] <= loop.time() - started_s:
            due += chunks[index][1]
            index += 1
        if self._transport is not None and due:  # what is due together: one chunk
            self._transport.write(f"{len(due):x}\r\n".encode() + bytes(due) + b"\r\n")
        if index < len(chunks):
            delay_s = started_s + chunks[index][0] - loop.time()
            loop.call_later(delay_s, self._stream_step, streamed, index, started_s, keep_alive)
            return
        self._end_stream(streamed, keep_alive)

    def _end_stream(self, streamed: Streamed, keep_alive: bool) -> None:
        try:
            streamed.finish()
        except Exception:
            log.exception("emulator stream finish failed")
        self._busy = False
        transport = self._transport
        if transport is None:
            return
        transport.write(b"0\r\n\r\n")
        if not keep_alive:
            transport.close()
            self._closed = True
            return
        self._process()

    def _send(self, reply: Reply, keep_alive: bool) -> None:
        transport = self._transport
        if transport is None:
            return
        if reply.drop:
            transport.abort()
            self._closed = True
            return
        transport.write(encode_reply(reply, keep_alive))
        if not keep_alive:
            transport.close()
            self._closed = True

    def _parse_one(self) -> HttpRequest | None:
        buffer = self._buffer
        head_end = buffer.find(b"\r\n\r\n")
        if head_end < 0:
            if len(buffer) > MAX_HEAD_BYTES:
                raise _BadRequestError(400, "request head too large")
            return None
        lines = bytes(buffer[:head_end]).decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            raise _BadRequestError(400, "malformed request line")
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise _BadRequestError(400, "malformed header line")
            headers[name.strip().lower()] = value.strip()
        if "transfer-encoding" in headers:
            raise _BadRequestError(501, "chunked request bodies are not supported")
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            raise _BadRequestError(400, "bad content-length") from None
        if not 0 <= length <= MAX_BODY_BYTES:
            raise _BadRequestError(413, "request body too large")
        total = head_end + 4 + length
        if len(buffer) < total:
            return None
        body = bytes(buffer[head_end + 4 : total])
        del buffer[:total]
        connection = headers.get("connection", "").lower()
        keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
        path, _, query = target.partition("?")
        return HttpRequest(method, path, query, headers, body, keep_alive)


class HttpServer:
    """A listening socket plus its open connections, so that :meth:`close` ends them all."""

    def __init__(self, server: asyncio.Server, live: set[HttpConnection]) -> None:
        self.server = server
        self._live = live

    @property
    def port(self) -> int:
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        self.server.close()
        for connection in list(self._live):
            connection.abort()
        await self.server.wait_closed()


async def start_http_server(
    handler: Handler, host: str, port: int, *, backlog: int = 1024
) -> HttpServer:
    """Listen on ``host:port`` (0 = any free port) with ``handler`` answering requests."""
    loop = asyncio.get_running_loop()
    live: set[HttpConnection] = set()
    server = await loop.create_server(
        lambda: HttpConnection(handler, live), host, port, backlog=backlog, reuse_address=True
    )
    return HttpServer(server, live)

"""Serve the emulator in this process: in the foreground (``python -m
testing.emulator``) or in a background thread (tests)::

    with EmulatorServer(config) as server:
        requests.post(server.base_url + "/v1/chat/completions", json=...)

As a child process: :class:`testing.emulator.process.EmulatorProcess`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable

from testing.emulator.app import EmulatorApp
from testing.emulator.clock import Clock
from testing.emulator.config import EmulatorConfig
from testing.emulator.engine import Emulator
from testing.emulator.http import start_http_server
from testing.lifecycle import StopsOnExit


class EmulatorServer(StopsOnExit):
    """The emulator behind its HTTP server, on ``host:port`` (0 = a free port)."""

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Clock | None = None,
    ) -> None:
        self.emulator = Emulator(config, clock=clock)
        self.host = host
        self.port = port
        self._app = EmulatorApp(self.emulator)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def serve(self, on_ready: Callable[[str], None] | None = None) -> None:
        """Serve until :meth:`request_stop`; ``on_ready(base_url)`` runs once listening."""
        server = await start_http_server(self._app, self.host, self.port)
        self.port = server.port
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        if on_ready is not None:
            on_ready(self.base_url)
        try:
            await self._stopped.wait()
        finally:
            await server.close()

    def start_in_thread(self, timeout_s: float = 10.0) -> str:
        """Serve from a daemon thread; returns the base URL once listening."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                asyncio.run(self.serve(lambda _url: ready.set()))
            except BaseException as exc:
                failure.append(exc)
                ready.set()

        self._thread = threading.Thread(target=run, name="llm-emulator", daemon=True)
        self._thread.start()
        if not ready.wait(timeout_s) or failure:
            raise RuntimeError(f"emulator did not start: {failure[0] if failure else 'timeout'}")
        return self.base_url

    def request_stop(self) -> None:
        """Ask :meth:`serve` to return; callable from any thread or a signal handler."""
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop already finished
                loop.call_soon_threadsafe(stopped.set)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop serving and join the thread (idempotent)."""
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def __enter__(self) -> EmulatorServer:
        self.start_in_thread()
        return self

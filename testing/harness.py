"""A whole deployment on this machine: redis-server, the provider emulator, real Celery
worker processes. Used by the demo, the integration tests and the benchmarks.

    with LocalStack(emulator_config, throttle_toml) as stack:
        stack.start_workers(2, pool="threads", concurrency=16)
        flower_url = stack.start_flower()   # optional: Flower watching the workers
        result = stack.enqueue(provider="emu", model="gpt-4o-mini", ...)

Everything it starts runs in its own process group and is stopped on exit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import requests
from celery import Celery

from testing.children import die_with_parent
from testing.emulator import EmulatorConfig, EmulatorProcess
from testing.lifecycle import StopsOnExit
from testing.redis_server import EmbeddedRedis, free_port
from testing.toml_writer import to_toml
from throttle.config import Config, load_config
from throttle.providers.credentials import env_var_for

#: The API key the stack's workers use against its emulator.
EMULATOR_KEY = "sk-local-emulator-key"
CREDENTIAL = "emulator"

#: Headroom for stacks whose limits are per second instead of per minute. What a bucket
#: keeps back at the provider is headroom x capacity in *units*, and it must cover the
#: requests that arrive bunched: 2% of 3,500 requests/min is 70 requests, but 5% of
#: 20/s is one, and a single task started late on a loaded 2-core machine (starts are
#: seen swapping by up to 0.5 s) spends it. A quarter keeps five or more; the rate is
#: unchanged, so steady utilization is not.
COMPRESSED_HEADROOM = 0.25


class LocalStack(StopsOnExit):
    """redis-server + emulator + workers, configured by one throttle config document.

    ``throttle`` is the throttle configuration as a dict (see :mod:`throttle.config`);
    the stack fills in the Redis URLs, and ``base_url``/``credential`` of every
    provider whose ``base_url`` is ``"emulator"``. ``redis_appendonly``: the server
    keeps an append-only file, so a restart (``stack.redis.crash()``, then
    ``stack.redis.start()``) finds everything again.
    """

    def __init__(
        self,
        emulator: EmulatorConfig,
        throttle: Mapping[str, Any],
        *,
        workdir: str | None = None,
        redis_appendonly: bool = False,
        python: str = sys.executable,
    ) -> None:
        """``python``: the interpreter the workers run on (another environment's, to
        run them on an install of the package alone); they start in ``workdir``, so
        they import the package from that interpreter's environment."""
        self.emulator_config = emulator
        self.throttle_doc = throttle
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="llm-throttle-")
        self.workdir = Path(workdir or self._tmp.name).resolve()  # type: ignore[union-attr]
        self.redis = EmbeddedRedis(appendonly=redis_appendonly)
        self.python = python
        self.emulator = EmulatorProcess(emulator)
        self.workers: list[subprocess.Popen[bytes]] = []
        self.flower: subprocess.Popen[bytes] | None = None
        self.gateways: list[subprocess.Popen[bytes]] = []
        self.config_path = self.workdir / "throttle.toml"
        self.config: Config | None = None
        self.app: Celery | None = None

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> LocalStack:
        self.redis.start()
        self.emulator.start()
        doc: dict[str, Any] = {k: dict(v) for k, v in self.throttle_doc.items()}
        base = self.redis.url.rsplit("/", 1)[0]
        doc.setdefault("redis", {}).setdefault("url", f"{base}/0")  # or a Cluster, Sentinel
        celery = doc.setdefault("celery", {})
        celery.setdefault("broker_url", f"{base}/1")
        celery.setdefault("result_backend", f"{base}/2")
        providers = {name: dict(p) for name, p in doc.get("providers", {}).items()}
        for provider in providers.values():
            if provider.get("base_url") == "emulator":
                provider["base_url"] = self.emulator.base_url
                provider.setdefault("credential", CREDENTIAL)
        doc["providers"] = providers
        self.config_path.write_text(to_toml(doc), encoding="utf-8")
        self.config = load_config(self.config_path, env={})
        from workers.app import create_app

        self.app = create_app(self.config)
        return self

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["LLM_THROTTLE_CONFIG"] = str(self.config_path)
        env[env_var_for(CREDENTIAL)] = EMULATOR_KEY
        env.pop("LLM_THROTTLE_REDIS_URL", None)
        env.pop("LLM_THROTTLE_BROKER_URL", None)
        env.pop("LLM_THROTTLE_RESULT_BACKEND", None)
        return env

    def start_workers(
        self,
        count: int,
        *,
        pool: str = "threads",
        concurrency: int = 16,
        extra_args: tuple[str, ...] = (),
        timeout_s: float = 60.0,
        extra_env: Mapping[str, str] | None = None,
    ) -> list[str]:
        """Start ``count`` worker processes; returns their names once all answer.
        ``extra_env`` is added to the environment of this batch of workers."""
        names = []
        first = len(self.workers)
        for _ in range(count):
            index = len(self.workers)
            name = f"w{index}@llm-throttle"
            log = open(self.workdir / f"worker{index}.log", "wb")  # noqa: SIM115
            level = os.environ.get("LLM_THROTTLE_WORKER_LOGLEVEL", "WARNING")
            args = [
                self.python, "-m", "celery", "-A", "workers.app", "worker",
                "-P", pool, "-c", str(concurrency), "-n", name, "-E", "--loglevel", level,
                "--without-gossip", "--without-mingle", *extra_args,
            ]  # fmt: skip
            self.workers.append(
                subprocess.Popen(
                    args,
                    env={**self.env(), **(extra_env or {})},
                    cwd=self.workdir,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=die_with_parent(),
                )
            )
            log.close()
            names.append(name)
        self.wait_for_workers(names, timeout_s, self.workers[first:])
        return names

    def wait_for_workers(
        self,
        names: list[str],
        timeout_s: float,
        processes: list[subprocess.Popen[bytes]] | None = None,
    ) -> None:
        """Until every one of ``names`` answers a ping; RuntimeError if one of
        ``processes`` (default: every worker started) exits meanwhile."""
        assert self.app is not None
        deadline = time.monotonic() + timeout_s
        missing = set(names)
        while missing and time.monotonic() < deadline:
            for worker in self.workers if processes is None else processes:
                if worker.poll() is not None:
                    raise RuntimeError(f"a worker exited at start; see {self.workdir}")
            replies = self.app.control.ping(timeout=0.5) or []
            for reply in replies:
                missing -= set(reply)
        if missing:
            raise RuntimeError(f"workers {sorted(missing)} did not answer; see {self.workdir}")

    def kill_worker(self, index: int, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to one worker's whole process group (its pool children too)."""
        os.killpg(self.workers[index].pid, sig)
        self.workers[index].wait(timeout=30)

    def stop_workers(self, timeout_s: float = 15.0) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for worker in self.workers:
            try:
                worker.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
        self.workers.clear()

    def start_flower(self, port: int | None = None, *, timeout_s: float = 30.0) -> str:
        """Start Flower on 127.0.0.1 (its API open, without authentication); returns its
        URL once it receives the events of every worker started so far."""
        port = port or free_port()
        log = open(self.workdir / "flower.log", "wb")  # noqa: SIM115
        args = [
            sys.executable, "-m", "celery", "-A", "workers.app", "flower",
            f"--port={port}", "--address=127.0.0.1",
        ]  # fmt: skip
        env = {**self.env(), "FLOWER_UNAUTHENTICATED_API": "true"}
        self.flower = subprocess.Popen(
            args,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
        log.close()
        url = f"http://127.0.0.1:{port}"
        names = {f"w{i}@llm-throttle" for i, w in enumerate(self.workers) if w.poll() is None}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.flower.poll() is not None:
                raise RuntimeError(f"Flower exited at start; see {self.workdir}/flower.log")
            try:
                reply = requests.get(f"{url}/api/workers?status=true", timeout=2)
                alive = {name for name, up in reply.json().items() if up}
            except (requests.RequestException, ValueError):
                alive = None  # not listening yet
            if alive is not None and names <= alive:
                return url
            time.sleep(0.2)
        raise RuntimeError(f"Flower did not see workers {sorted(names)}; see {self.workdir}")

    def start_gateway(
        self,
        port: int | None = None,
        *,
        timeout_s: float = 30.0,
        source_tree: Path | None = None,
        processes: int = 1,
        entry: Sequence[str] = ("-m", "gateway"),
    ) -> str:
        """Start ``python -m gateway`` (``processes`` server processes) on 127.0.0.1;
        returns its URL once it answers ``/health`` (with any status). It gets no
        provider key: it needs none. ``source_tree``: run another checkout's code (its
        directory first on the path, and the working directory: bench/gateway.py
        measures a baseline's gateway beside this one's). ``entry``: how to start it
        after the interpreter (an older checkout's ``-m throttle.cli serve``)."""
        port = port or free_port()
        index = len(self.gateways)
        log_path = self.workdir / ("gateway.log" if index == 0 else f"gateway{index}.log")
        log = open(log_path, "wb")  # noqa: SIM115
        args = [
            sys.executable, *entry, "--config", str(self.config_path),
            "--host", "127.0.0.1", "--port", str(port), "--workers", str(processes),
        ]  # fmt: skip
        # no provider key, and the config only by --config
        env = {
            k: v
            for k, v in self.env().items()
            if not k.startswith("LLM_THROTTLE_KEY_") and k != "LLM_THROTTLE_CONFIG"
        }
        if source_tree is not None:
            env["PYTHONPATH"] = str(source_tree)
        gateway = subprocess.Popen(
            args,
            cwd=source_tree,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
        self.gateways.append(gateway)
        log.close()
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if gateway.poll() is not None:
                raise RuntimeError(f"the gateway exited at start; see {log_path}")
            try:
                requests.get(f"{url}/health", timeout=2)
                return url
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError(f"the gateway did not answer; see {log_path}")

    def stop_gateway(self) -> None:
        """Stop every gateway started."""
        for gateway in self.gateways:
            if gateway.poll() is None:
                os.killpg(gateway.pid, signal.SIGTERM)
                try:
                    gateway.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(gateway.pid, signal.SIGKILL)
                    gateway.wait()
        self.gateways.clear()

    def stop_flower(self) -> None:
        if self.flower is not None and self.flower.poll() is None:
            os.killpg(self.flower.pid, signal.SIGTERM)
            try:
                self.flower.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.flower.pid, signal.SIGKILL)
                self.flower.wait()
        self.flower = None

    def stop(self, grace_s: float | None = None) -> None:
        """Stop everything it started. By default in order and gracefully: workers
        finish the calls in hand (up to 15 s), then the emulator and Redis stop. With
        ``grace_s`` (the demo on Ctrl-C: nothing is kept) every process is signalled at
        once and whatever still runs ``grace_s`` later is killed, so the stop takes
        about ``grace_s`` at most, however busy the workers are."""
        if grace_s is not None:
            self._terminate_all(grace_s)
        self.stop_gateway()
        self.stop_flower()
        self.stop_workers()
        if self.app is not None:
            self.app.close()
        self.emulator.stop()
        self.redis.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def _terminate_all(self, grace_s: float) -> None:
        processes = [
            *self.gateways,
            self.flower,
            *self.workers,
            self.emulator.process,
            self.redis.process,
        ]
        running = [p for p in processes if p is not None and p.poll() is None]
        for process in running:  # each leads its own process group (start_new_session)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def __enter__(self) -> LocalStack:
        # ``with LocalStack(...).start() as stack`` must not start a second Redis and
        # emulator that ``stop`` would then leave running
        return self if self.config is not None else self.start()

    # -- use --------------------------------------------------------------------------

    def enqueue(self, **kwargs: Any) -> Any:
        from tasks.completion import enqueue

        assert self.app is not None
        self.app.set_current()
        return enqueue(**kwargs)

    def emulator_stats(self) -> dict[str, Any]:
        reply = requests.get(self.emulator.base_url + "/__emu/stats", timeout=10)
        reply.raise_for_status()
        return reply.json()  # type: ignore[no-any-return]

    def emulator_post(self, path: str, body: Mapping[str, Any]) -> None:
        reply = requests.post(self.emulator.base_url + path, json=body, timeout=10)
        reply.raise_for_status()

    def worker_log(self, index: int) -> str:
        return (self.workdir / f"worker{index}.log").read_text(errors="replace")

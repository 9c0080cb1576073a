"""``llm-throttle demo``: the whole product on this machine in under a minute and a half.

It starts a private redis-server, the provider emulator (OpenAI profile, two models in
separate quota pools, limits shaped like a real tier but per second so the run is
short) and two Celery worker processes; enqueues a few hundred completions over two
models and three tenants; shows a live progress bar; and ends with a report: achieved
rate against every limit, provider 429s, parked tasks, wait percentiles, wall time.

This module is the run itself: processes, polling, signals and cleanup. What runs is
in :mod:`tools.demo_plan`, the report in :mod:`tools.demo_report`, the progress
line in :mod:`tools.demo_progress`.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from testing.harness import LocalStack
from tools.demo_plan import DEFAULT_PLAN, PROVIDER, DemoPlan, DemoRequest
from tools.demo_progress import Progress, ProgressDisplay, recent_rate_per_s
from tools.demo_report import (
    Outcome,
    Sample,
    build_report,
    flower_command,
    format_banner,
    format_report,
    sample_of,
)

#: On Ctrl-C, how long the stack's processes get to exit after SIGTERM before SIGKILL.
STOP_GRACE_S = 1.0
#: ... and how long the whole cleanup may take before the demo exits regardless.
STOP_DEADLINE_S = 4.0


class DemoError(Exception):
    """The demo could not run; the message says why."""


class Interrupted(Exception):
    """SIGTERM or SIGHUP arrived; unwind and clean up."""


@dataclass
class DemoOptions:
    tasks: int = 500
    keep: bool = False
    #: Give up on unfinished tasks after this long (seconds from the first enqueue).
    timeout_s: float = 150.0
    plan: DemoPlan = DEFAULT_PLAN
    out: TextIO = field(default_factory=lambda: sys.stdout)


class _StopRequest:
    """The signal that asked the demo to stop, if any. Its handler raises at once, but
    an exception raised while Python runs a finalizer is printed and dropped: Celery's
    ``AsyncResult.__del__`` talks to Redis, and the demo drops hundreds of results, so
    a Ctrl-C landing there was lost and the demo ran on (1 stop in 35 under load did
    not come within 60 s). The demo's loops call :meth:`check` and raise it again."""

    def __init__(self) -> None:
        self.name: str | None = None

    def raise_it(self) -> None:
        if self.name == "SIGINT":
            raise KeyboardInterrupt
        raise Interrupted(self.name or "")

    def check(self) -> None:
        if self.name is not None:
            self.raise_it()


_stop = _StopRequest()


@contextlib.contextmanager
def _terminating_signals_raise() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt, SIGTERM/SIGHUP :class:`Interrupted`, so
    ``finally`` blocks run and every child is stopped; each is remembered in
    ``_stop`` as well."""

    def handler(signum: int, frame: FrameType | None) -> None:
        _stop.name = signal.Signals(signum).name
        _stop.raise_it()

    _stop.name = None
    previous: dict[signal.Signals, Any] = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """Hold off SIGINT/SIGTERM/SIGHUP so a second Ctrl-C cannot cut cleanup short."""
    previous: dict[signal.Signals, Any] = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            previous[sig] = signal.signal(sig, signal.SIG_IGN)
    except ValueError:
        pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@dataclass(frozen=True)
class Enqueued:
    request: DemoRequest
    #: Wall-clock epoch seconds just before the message was sent.
    at_s: float


class ResultCollector:
    """Finished results of many tasks, fetched in one MGET per poll."""

    def __init__(self, app: Any) -> None:
        self.app = app
        #: Task id -> what was sent, until its result is in.
        self.pending: dict[str, Enqueued] = {}
        self.outcomes: list[Outcome] = []

    def poll(self) -> None:
        backend = self.app.backend
        ids = list(self.pending)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            raw = backend.client.mget([backend.get_key_for_task(i) for i in chunk])
            for task_id, value in zip(chunk, raw, strict=True):
                if value is None:
                    continue
                meta = backend.decode_result(value)
                if meta.get("status") == "SUCCESS":
                    sent = self.pending.pop(task_id)
                    self.outcomes.append(
                        Outcome.from_result(sent.request, sent.at_s, meta["result"])
                    )
                elif meta.get("status") == "FAILURE":
                    error = meta.get("result") or {}
                    text = f"{error.get('exc_type', 'Error')}: {error.get('exc_message', '')}"
                    sent = self.pending.pop(task_id)
                    self.outcomes.append(Outcome.failed(sent.request, text))

    @property
    def done(self) -> int:
        return len(self.outcomes)


def run_demo(options: DemoOptions) -> int:
    """Run the demo end to end; returns the exit code. Every process it started is
    stopped before it returns, whatever happened."""
    out = options.out
    # `kill -USR1 <pid>` prints where every thread is: for a demo that does not stop
    with contextlib.suppress(ValueError, AttributeError):  # not the main thread
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    workdir = Path(tempfile.mkdtemp(prefix="llm-throttle-demo-"))
    keep_logs = interrupted = False
    stack: LocalStack | None = None
    code_if_stuck: int | None = None
    try:
        with _terminating_signals_raise():
            try:
                stack = LocalStack(
                    options.plan.emulator_config(),
                    options.plan.throttle_doc(),
                    workdir=str(workdir),
                )
                code_if_stuck = code = _run(stack, options)
                if options.keep:
                    _wait_for_interrupt(out)
                    interrupted = True
                return code
            except (KeyboardInterrupt, Interrupted) as exc:
                interrupted = True
                out.write(f"\nllm-throttle demo: interrupted ({str(exc) or 'SIGINT'}); stopping\n")
                out.flush()
                return 130
            except DemoError as exc:
                keep_logs = True
                out.write(f"\nllm-throttle demo: {exc}\n")
                return 1
            except Exception as exc:  # a failure of any part: say what and where
                keep_logs = True
                out.write(f"\nllm-throttle demo failed: {type(exc).__name__}: {exc}\n")
                return 1
            finally:
                with _signals_ignored():
                    if stack is not None and interrupted:
                        _exit_if_stuck(stack, out, 130 if code_if_stuck is None else code_if_stuck)
                    if stack is not None:
                        if keep_logs:
                            out.write(_log_tails(stack))
                        # interrupted: nothing is kept, so nothing waits for the calls
                        # in hand (a warm worker shutdown under load took seconds)
                        stack.stop(grace_s=STOP_GRACE_S if interrupted else None)
    finally:
        if keep_logs:
            out.write(f"logs kept in {workdir}\n")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        out.flush()


def _exit_if_stuck(stack: LocalStack, out: TextIO, code: int) -> None:
    """Stopped by a signal: if the cleanup has not ended the process ``STOP_DEADLINE_S``
    from now, print where every thread is, kill the stack's processes and exit."""
    processes = [stack.flower, *stack.workers, stack.emulator.process, stack.redis.process]
    pids = [p.pid for p in processes if p is not None]

    def watchdog() -> None:
        time.sleep(STOP_DEADLINE_S)
        out.write(f"\nllm-throttle demo: cleanup took over {STOP_DEADLINE_S:.0f} s; exiting\n")
        out.flush()
        faulthandler.dump_traceback(all_threads=True)
        for pid in pids:  # each leads its own process group
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
        os._exit(code)

    threading.Thread(target=watchdog, name="llm-throttle-demo-watchdog", daemon=True).start()


def _log_tails(stack: LocalStack, lines: int = 15) -> str:
    parts = []
    for index in range(len(stack.workers)):
        tail = stack.worker_log(index).strip().splitlines()[-lines:]
        if tail:
            parts.append(f"--- worker {index} log (last {len(tail)} lines) ---")
            parts += tail
    return "\n".join(parts) + ("\n" if parts else "")


def _run(stack: LocalStack, options: DemoOptions) -> int:
    out, plan = options.out, options.plan
    t0 = time.monotonic()
    out.write(format_banner(plan, options.tasks))
    out.write(
        f"starting redis-server, the provider emulator and {plan.workers} Celery workers...\n"
    )
    out.flush()
    flower = _start(stack, plan)
    startup_s = time.monotonic() - t0
    out.write(f"stack up in {startup_s:.1f} s (emulator at {stack.emulator.base_url})\n")
    if options.keep:
        out.write(f"watch it in Flower (http://localhost:5555):\n  {flower}\n")
    requests = plan.requests(options.tasks)
    t_run = time.monotonic()
    samples: list[Sample] = [sample_of(stack.emulator_stats())]
    collector = ResultCollector(stack.app)
    _watch(stack, requests, collector, t_run, samples, options)
    workload_s = time.monotonic() - t_run
    report = build_report(
        plan,
        collector.outcomes,
        len(collector.pending),
        samples,
        stack.emulator_stats(),
        wall_s=time.monotonic() - t0,
        startup_s=startup_s,
        workload_s=workload_s,
    )
    out.write(format_report(report))
    out.write(
        "\nWatch a run in Flower: start the demo with --keep, then in another terminal:\n"
        f"  {flower}\n"
        "(--keep leaves redis, the emulator and the workers running until Ctrl-C.)\n"
    )
    out.flush()
    if report.failed or report.unfinished:
        out.write(f"llm-throttle demo: {report.failed} failed, {report.unfinished} unfinished\n")
        return 1
    return 0


def _start(stack: LocalStack, plan: DemoPlan) -> str:
    """Start redis, the emulator and the workers; returns the Flower command."""
    stack.start()
    try:
        stack.start_workers(plan.workers, pool="threads", concurrency=plan.threads_per_worker)
    except RuntimeError as exc:
        raise DemoError(f"a worker did not start: {exc}") from exc
    assert stack.config is not None
    celery_bin = Path(sys.executable).with_name("celery")
    return flower_command(str(stack.config_path), stack.config.broker_url, str(celery_bin))


def _enqueue_for(
    stack: LocalStack, todo: list[DemoRequest], collector: ResultCollector, budget_s: float
) -> None:
    """Enqueue from the front of ``todo`` for about ``budget_s``, so progress keeps
    being drawn while a big workload is sent."""
    until = time.monotonic() + budget_s
    while todo and time.monotonic() < until:
        _stop.check()
        r = todo.pop(0)
        at_s = time.time()
        result = stack.enqueue(
            provider=PROVIDER,
            model=r.model,
            messages=list(r.messages),
            max_tokens=r.max_tokens,
            tenant=r.tenant,
        )
        collector.pending[result.id] = Enqueued(r, at_s)


def _wait_for_interrupt(out: TextIO) -> None:
    out.write("stack kept running; Ctrl-C to stop it.\n")
    out.flush()
    with contextlib.suppress(KeyboardInterrupt, Interrupted):
        while True:
            _stop.check()
            time.sleep(0.5)
    out.write("\nstopping.\n")


def _watch(
    stack: LocalStack,
    requests: Sequence[DemoRequest],
    collector: ResultCollector,
    t_run: float,
    samples: list[Sample],
    options: DemoOptions,
    tick_s: float = 0.25,
    sample_every_s: float = 0.5,
) -> None:
    """Enqueue ``requests``, then poll results and the emulator until every task is done
    (or the timeout); the emulator's admitted costs are appended to ``samples``."""
    display = ProgressDisplay(options.out)
    todo, total = list(requests), len(requests)
    history: list[tuple[float, int]] = []
    provider_429s, next_sample_s = 0, 0.0
    while True:
        _stop.check()
        _enqueue_for(stack, todo, collector, tick_s)
        collector.poll()
        t_s = time.monotonic() - t_run
        if t_s >= next_sample_s or not collector.pending:
            stats = stack.emulator_stats()
            samples.append(sample_of(stats))
            provider_429s = int(stats.get("by_status", {}).get("429", 0))
            next_sample_s = t_s + sample_every_s
        history.append((t_s, collector.done))
        progress = Progress(
            done=collector.done,
            total=total,
            enqueued=total - len(todo),
            failed=sum(not o.ok for o in collector.outcomes),
            elapsed_s=t_s,
            rate_per_s=recent_rate_per_s(history),
            provider_429s=provider_429s,
            parked=sum(o.parks > 0 for o in collector.outcomes),
        )
        finished = not todo and not collector.pending
        timed_out = t_s > options.timeout_s
        display.show(progress, final=finished or timed_out)
        if finished or timed_out:
            return
        if not todo:
            time.sleep(tick_s)

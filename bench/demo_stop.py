"""How fast Ctrl-C stops the demo (issue 12, acceptance 6). Run by hand, never in CI::

    .venv/bin/python bench/demo_stop.py             # 20 runs, about 3 minutes
    .venv/bin/python bench/demo_stop.py --runs 5 --load 2

Each run starts ``llm-throttle demo --tasks 400 --keep`` and sends SIGINT at a random
moment between 0.2 s and ``--latest`` seconds after the start: while the stack comes
up, while tasks are sent and run, or while the kept stack waits. It measures the time
from the signal to the demo's exit, and checks that every process the demo had started
(its whole process tree just before the signal) is gone. ``--load N`` keeps N busy
processes spinning meanwhile (at ``--load-nice``, default 19; 0 competes with the demo
as another test run would). The target: every run stops within 5 s and
leaves nothing behind.

Markdown goes to stdout; raw JSON to ``bench/results/demo-stop-<time>.json``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.results_file import machine, write_raw  # noqa: E402

TARGET_S = 5.0


@dataclass(frozen=True)
class Run:
    run: int
    signal_after_s: float
    #: What the demo had last printed when the signal came.
    phase: str
    stop_s: float
    exit_code: int | None
    processes_before: int
    left_behind: int


def descendants(root: int) -> set[int]:
    """Pids of every live process under ``root`` (by parent pid)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def phase_of(lines: list[str]) -> str:
    text = "".join(lines)
    if "stack kept running" in text:
        return "kept, waiting"
    if "tasks:" in text and "enqueued" in text:
        return "report"
    if "stack up" in text:
        return "running tasks"
    return "starting stack"


def spin(niceness: int) -> None:
    os.nice(niceness)
    while True:
        pass


def one_run(n: int, latest_s: float, rng: random.Random) -> Run:
    demo = subprocess.Popen(
        [sys.executable, "-m", "tools.cli", "demo", "--tasks", "400", "--keep"],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    assert demo.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(demo.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    delay_s = rng.uniform(0.2, latest_s)
    time.sleep(delay_s)
    phase = phase_of(lines)
    tree = descendants(demo.pid)
    started = time.monotonic()
    demo.send_signal(signal.SIGINT)
    try:
        code: int | None = demo.wait(timeout=60)
    except subprocess.TimeoutExpired:
        code = None
    stop_s = time.monotonic() - started
    if code is None:  # where is it stuck? (the demo dumps its threads on SIGUSR1)
        demo.send_signal(signal.SIGUSR1)
        time.sleep(2)
        demo.kill()
        demo.wait()
    time.sleep(0.5)  # a killed child is reaped by init, not at once
    left = [pid for pid in tree if alive(pid)]
    for pid in left:  # leave the machine clean for the next run
        os.kill(pid, signal.SIGKILL)
    reader.join(timeout=5)
    if code is None:
        print(f"run {n} did not stop; its last output:\n{''.join(lines[-80:])}", file=sys.stderr)
    return Run(n, round(delay_s, 2), phase, round(stop_s, 2), code, len(tree), len(left))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--latest", type=float, default=25.0, help="latest signal, s")
    parser.add_argument("--load", type=int, default=0, help="busy processes meanwhile")
    parser.add_argument("--load-nice", type=int, default=19, help="their niceness")
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    spinners = [
        multiprocessing.Process(target=spin, args=(args.load_nice,), daemon=True)
        for _ in range(args.load)
    ]
    for spinner in spinners:
        spinner.start()
    runs = []
    try:
        for n in range(1, args.runs + 1):
            run = one_run(n, args.latest, rng)
            runs.append(run)
            print(f"run {n}: {run}", file=sys.stderr, flush=True)
    finally:
        for spinner in spinners:
            spinner.kill()
    print(
        f"Ctrl-C stops the demo: {args.runs} runs, load {args.load} (nice {args.load_nice}),"
        f" target {TARGET_S:.0f} s\n"
    )
    print("| run | signal after s | phase | stop s | exit | processes | left behind |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    for r in runs:
        print(
            f"| {r.run} | {r.signal_after_s:.1f} | {r.phase} | {r.stop_s:.2f} | {r.exit_code} "
            f"| {r.processes_before} | {r.left_behind} |"
        )
    stops = sorted(r.stop_s for r in runs)
    slow = sum(s > TARGET_S for s in stops)
    left = sum(r.left_behind for r in runs)
    print(
        f"\nstop time: median {stops[len(stops) // 2]:.2f} s, max {stops[-1]:.2f} s; "
        f"{slow} of {len(runs)} over {TARGET_S:.0f} s; {left} processes left behind"
    )
    path = write_raw(
        "demo-stop",
        {"machine": machine(), "args": vars(args), "runs": [asdict(r) for r in runs]},
    )
    print(f"raw: {path}", file=sys.stderr)
    return 0 if slow == 0 and left == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

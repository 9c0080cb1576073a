"""What each Lua step of one completion costs the server, in instructions (callgrind).
Run by hand, never in CI::

    .venv/bin/python bench/script_cost.py            # about a minute
    .venv/bin/python bench/script_cost.py --calls 100

The embedded redis-server runs under ``valgrind --tool=callgrind``, collecting only
inside ``evalShaCommand`` (a script's whole run: argument tables, the Lua, its
commands). Instruction counts do not change with the machine's speed, so one run is
enough and a change to a script can be weighed against its parent commit exactly.

Steps, each ``--calls`` times, on the shape of ``bench/backlog_cost.py`` (requests and
tokens dimensions; ready-made Celery messages published by the pass):

* ``admit``: an admission that starts at once (the immediate path);
* ``settle``: its settle, refunding tokens;
* ``push``: a push into a saturated fair queue (a send behind a deep backlog);
* ``pass (empty)``: a pass that finds the group saturated and releases nothing;
* ``pass (per item)``: what each item a pass releases adds (a pass releasing many,
  less an empty one);
* ``begin``: the start check of a released item.

Markdown goes to stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import redis  # noqa: E402
from celery import Celery  # noqa: E402

from testing.redis_server import free_port, redis_server_binary  # noqa: E402
from throttle.config import Lane  # noqa: E402
from throttle.keys import KeyBuilder  # noqa: E402
from throttle.limiter import RedisLimiter  # noqa: E402
from throttle.limits import LimitGroup  # noqa: E402
from throttle.scheduler import BrokerOnServer, FairScheduler, QueuedItem  # noqa: E402
from workers.message import prebuilt_message, unacked_keys  # noqa: E402

LANES = [Lane("interactive"), Lane("batch", 0.2)]
PROMPT = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}


class Callgrind:
    """A redis-server under callgrind, collecting inside EVALSHA only."""

    def __init__(self, keep: str | None = None) -> None:
        #: A folder to keep each step's callgrind file in (for callgrind_annotate).
        self.keep, self.kept = keep, 0
        self.dir = tempfile.mkdtemp(prefix="script-cost-")
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                "valgrind",
                "--tool=callgrind",
                "--toggle-collect=evalShaCommand",
                f"--callgrind-out-file={self.dir}/cg.out",
                redis_server_binary(),
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def instructions(self) -> int:
        """Instructions collected since the last call (dump and zero)."""
        for path in glob.glob(f"{self.dir}/cg.out*"):
            os.remove(path)
        subprocess.run(
            ["callgrind_control", "--dump", str(self.process.pid)],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        total = 0
        for path in glob.glob(f"{self.dir}/cg.out*"):
            with open(path, encoding="utf-8") as f:
                for line in f:
                    if line.startswith("summary:") or line.startswith("totals:"):
                        total = max(total, int(line.split()[1]))
            if self.keep:
                self.kept += 1
                os.rename(path, f"{self.keep}/step-{self.kept}.out")
        return total

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--keep", help="a folder to keep each step's callgrind file in")
    args = parser.parse_args(argv)
    n = args.calls
    server = Callgrind(args.keep)
    try:
        client = server.client
        url = f"redis://127.0.0.1:{server.port}"
        app = Celery("cost", broker=f"{url}/1")
        hash_key, index_key = unacked_keys(app.conf.broker_transport_options)
        limiter = RedisLimiter(client, keys=KeyBuilder("cost"))
        broker = BrokerOnServer(1, 0, hash_key, index_key)
        scheduler = FairScheduler(limiter, LANES, broker=broker)

        def message(i: int) -> str:
            return prebuilt_message(
                app, "g", "tasks.completion", f"id-{i}", PROMPT, "llm", {}, repr(PROMPT)
            )

        free = LimitGroup.from_specs("free", {"requests": "100000/s", "tokens": "100M/s"})
        # an empty requests bucket at 1/min: every push finds the group saturated
        narrow = dataclasses.replace(
            LimitGroup.from_specs("narrow", {"requests": "1/min", "tokens": "100M/s"}),
            cold_start=0.001,
        )
        # a full bucket of 10,000 requests: one pass releases up to its limit
        wide = dataclasses.replace(
            LimitGroup.from_specs("wide", {"requests": "10000/min", "tokens": "100M/s"}),
            cold_start=1.0,
        )
        costs = {"requests": 1, "tokens": 100}
        rows: list[tuple[str, float]] = []
        server.instructions()

        handles = []
        for _ in range(n):
            admission = limiter.admit(free, costs, max_wait_s=1.0)
            handles.append(admission.reservation)
        rows.append(("admit", server.instructions() / n))
        for handle in handles:
            limiter.settle(free, handle, {"tokens": -50})
        rows.append(("settle", server.instructions() / n))

        scheduler.push(narrow, QueuedItem("first", costs, "batch", "t", 1.0, 0, message(0)))
        server.instructions()
        for i in range(n):
            item = QueuedItem(f"n{i}", costs, "batch", "t", 1.0, 0, message(i))
            scheduler.push(narrow, item)
        rows.append(("push (saturated)", server.instructions() / n))
        for _ in range(n):
            scheduler.run_pass(narrow)
        empty = server.instructions() / n
        rows.append(("pass (empty)", empty))

        limiter.pause(wide, 1000.0)  # the pushes queue, the pass releases nothing
        for i in range(n):
            scheduler.push(wide, QueuedItem(f"w{i}", costs, "batch", "t", 1.0, 0, message(i)))
        client.hdel(KeyBuilder("cost").state("wide"), "pause")
        server.instructions()
        done = scheduler.run_pass(wide)
        many = server.instructions()
        released = len(done.released)
        rows.append((f"pass (per item, {released} released)", (many - empty) / max(1, released)))

        reservations = [limiter.admit(free, costs, max_wait_s=1.0).reservation for _ in range(n)]
        server.instructions()
        for reservation in reservations:
            limiter.begin(free, reservation)
        rows.append(("begin", server.instructions() / n))
    finally:
        server.stop()
    print("| step | instructions per call |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value:,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

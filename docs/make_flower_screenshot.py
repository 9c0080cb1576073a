"""Screenshots of Flower's task page for a task the throttle parked after a provider 429:
``docs/flower-task-parked.png`` while it waits, ``docs/flower-task.png`` once done.

By hand, not in ``make test``; needs Debian's chromium (``apt-get install chromium``)::

    .venv/bin/python docs/make_flower_screenshot.py [--out docs] [--chromium /usr/bin/chromium]

It starts a local stack (redis-server, the provider emulator, one worker) and Flower, and
queues five completions on a group allowed one request a second; the emulator answers
the first call with a 429 and Retry-After 15 s, so the group pauses and that task parks.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from testing.emulator import (
    EmulatorConfig,
    LatencyConfig,
    PoolConfig,
    parse_limits_text,
)
from testing.harness import LocalStack

PROMPT = [{"role": "user", "content": "Name three rivers."}]
RETRY_AFTER_S = 15


def screenshot(chromium: str, url: str, png: Path) -> None:
    """One headless Chromium screenshot of ``url``, 1400x1000."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        args = [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}",
            "--window-size=1400,1000", f"--screenshot={png}", url,
        ]  # fmt: skip
        subprocess.run(args, check=True, capture_output=True, timeout=60)
    if not png.exists():
        raise RuntimeError(f"chromium wrote no {png}")
    print(f"wrote {png} ({url})")


def wait_for(what: str, timeout_s: float, probe: Any) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.3)
    raise RuntimeError(f"timed out waiting for {what}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args(argv)

    limits = parse_limits_text("requests=20/s,tokens=1000000/s")
    emu = EmulatorConfig(
        pools=(PoolConfig("default", limits, models=("gpt-4o-mini",)),),
        latency=LatencyConfig(ttft_ms=20),
    )
    doc = {
        "providers": {"emu": {"profile": "openai", "base_url": "emulator"}},
        "groups": {
            "emu:mini": {
                "provider": "emu",
                "models": ["gpt-4o-mini"],
                "requests": "1/s",
                "tokens": "1000000/s",
                "headroom": 0.0,
            }
        },
    }
    with LocalStack(emu, doc) as stack:
        stack.start_workers(1, pool="threads", concurrency=4)
        flower = stack.start_flower()
        now_s = stack.emulator_stats()["now_s"]
        refusal = {"kind": "rate_limit", "start_s": now_s, "max_hits": 1,
                   "retry_after_s": RETRY_AFTER_S}  # fmt: skip
        stack.emulator_post("/__emu/faults", {"faults": [refusal]})
        results = [
            stack.enqueue(provider="emu", model="gpt-4o-mini", messages=PROMPT, max_tokens=20)
            for _ in range(5)
        ]

        def parked_after_429() -> str | None:
            tasks = requests.get(f"{flower}/api/tasks", timeout=5).json()
            for task_id, task in tasks.items():
                if task["state"] == "PARKED" and "'rate_limited': 1" in (task["result"] or ""):
                    return str(task_id)
            return None

        task_id = wait_for("a task parked after its 429", 30, parked_after_429)
        screenshot(args.chromium, f"{flower}/task/{task_id}", args.out / "flower-task-parked.png")

        def done() -> bool:
            info = requests.get(f"{flower}/api/task/info/{task_id}", timeout=5).json()
            return all(r.ready() for r in results) and info["state"] == "SUCCESS"

        wait_for("every task to finish", RETRY_AFTER_S + 30, done)
        screenshot(args.chromium, f"{flower}/task/{task_id}", args.out / "flower-task.png")
        facts = next(r.result["throttle"] for r in results if r.id == task_id)
        print(f"task {task_id}: {facts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

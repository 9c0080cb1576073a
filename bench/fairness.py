"""Fair scheduling against FIFO admission (issue 11, acceptance 1-3 and 5). Run by
hand, never in CI::

    .venv/bin/python bench/fairness.py            # about 3 minutes
    .venv/bin/python bench/fairness.py --only isolation,weights

It starts its own redis-server (the embedded one) and stops it at exit.

Every scenario is a list of arrivals (tenant, lane, seconds after the start). Two
subjects take the same arrivals in the same run, on two groups with the same limits:

* ``fifo``: admission binds a start slot at arrival (``RedisLimiter.admit`` without a
  bound, ``admit.lua``): one timeline per group, as before issue 11;
* ``fair``: every arrival is pushed into the fair queue (``FairScheduler.push``) and
  passes run at the due time each pass gives (what the workers' dispatcher does). The
  start of an item is the slot its release reserved.

Both decide on the Redis server's clock with the same admission core, so only the
scheduling differs. Windows are compressed: the issue's minute is ``WINDOW_S``.
No provider is called: the figures are the throttle's decisions. The end-to-end
forms (real workers, the emulator's 429 counts) are in ``tests/test_fairness_e2e.py``.

Markdown tables go to stdout; raw JSON to ``bench/results/fairness-<time>.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.results_file import machine, write_raw  # noqa: E402
from testing.redis_server import EmbeddedRedis  # noqa: E402
from throttle.config import Config, config_from_dict  # noqa: E402
from throttle.keys import KeyBuilder  # noqa: E402
from throttle.limiter import RedisLimiter  # noqa: E402
from throttle.limits import LimitGroup  # noqa: E402
from throttle.scheduler import FairScheduler, QueuedItem  # noqa: E402

#: The issue's minute, compressed.
WINDOW_S = 10.0
HOLD_HORIZON_S = 2.0


@dataclass(frozen=True)
class Arrival:
    tenant: str
    lane: str
    at_s: float


@dataclass(frozen=True)
class Start:
    tenant: str
    lane: str
    arrival_s: float
    start_s: float

    @property
    def wait_s(self) -> float:
        return max(0.0, self.start_s - self.arrival_s)


@dataclass(frozen=True)
class Event:
    """Something done to the fair subject's group during the run: a 429 pause."""

    at_s: float
    pause_s: float


@dataclass
class Scenario:
    name: str
    #: The group's TOML table (without provider and models).
    group: dict[str, Any]
    arrivals: list[Arrival]
    scheduler: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)


@dataclass
class Run:
    subject: str
    starts: list[Start]
    seconds: float


def config_for(scenario: Scenario) -> Config:
    group = {"provider": "emu", "headroom": 0.0, **scenario.group}
    return config_from_dict(
        {
            "providers": {"emu": {"profile": "openai", "base_url": "http://127.0.0.1:9"}},
            "groups": {name: {**group, "models": [name]} for name in ("fifo", "fair")},
            "scheduler": scenario.scheduler or {},
        }
    )


def request_costs(group: LimitGroup) -> dict[str, float]:
    """One request: 1 of every requests dimension (the group's and the tenant's)."""
    return {d.name: 1.0 for d in group.dimensions if d.name.rsplit(".", 1)[-1] == "requests"}


def run_scenario(client: redis.Redis, scenario: Scenario, prefix: str) -> tuple[Run, Run]:
    """Both subjects on the same arrivals, at once, on two groups of one Redis."""
    config = config_for(scenario)
    limiter = RedisLimiter(client, keys=KeyBuilder(prefix))
    scheduler = FairScheduler(limiter, config.scheduler.lanes)
    settings = {name: config.groups[name] for name in ("fifo", "fair")}
    arrivals = sorted(scenario.arrivals, key=lambda a: a.at_s)
    events = sorted(scenario.events, key=lambda e: e.at_s)
    fifo: list[Start] = []
    fair: dict[str, Start] = {}
    pending: dict[str, Arrival] = {}
    arrived_s: dict[str, float] = {}
    t0_ms = limiter.server_time_ms()

    def since(ms: float) -> float:
        return (ms - t0_ms) / 1000

    def record(done: Any) -> float | None:
        for item in done.released:
            arrival = pending.pop(item.item_id)
            fair[item.item_id] = Start(
                arrival.tenant, arrival.lane, arrived_s[item.item_id], since(item.slot_ms)
            )
        due: float | None = done.due_in_s
        return due

    due_s: float | None = None
    next_pass_at = float("inf")
    n = 0
    while arrivals or pending:
        now_s = since(limiter.server_time_ms())
        while arrivals and arrivals[0].at_s <= now_s:
            arrival = arrivals.pop(0)
            n += 1
            item_id = f"r{n}"
            fifo_group = config.limit_group(settings["fifo"], arrival.tenant)
            admission = limiter.admit(fifo_group, request_costs(fifo_group))
            fifo.append(Start(arrival.tenant, arrival.lane, now_s, since(admission.slot_ms)))
            fair_group = config.limit_group(settings["fair"], arrival.tenant)
            pending[item_id] = arrival
            arrived_s[item_id] = now_s
            item = QueuedItem(
                item_id,
                request_costs(fair_group),
                config.scheduler.lane(arrival.lane),
                arrival.tenant,
                config.tenant_weight(settings["fair"], arrival.tenant),
                0,
                item_id,
            )
            due_s = record(scheduler.push(fair_group, item))
            next_pass_at = now_s + due_s if due_s is not None else float("inf")
        while events and events[0].at_s <= now_s:
            event = events.pop(0)
            limiter.pause(config.limit_group(settings["fair"]), event.pause_s, rate_limited=True)
        if pending and now_s >= next_pass_at:
            due_s = record(scheduler.run_pass(config.limit_group(settings["fair"])))
            next_pass_at = now_s + due_s if due_s is not None else now_s + 1.0
        wake_at = min(
            next_pass_at if pending else float("inf"),
            arrivals[0].at_s if arrivals else float("inf"),
            events[0].at_s if events else float("inf"),
        )
        if wake_at != float("inf"):
            time.sleep(min(0.5, max(0.0, wake_at - now_s)))
    seconds = since(limiter.server_time_ms())
    return Run("fifo", fifo, seconds), Run("fair", list(fair.values()), seconds)


# -- the scenarios ---------------------------------------------------------------------


def isolation() -> Scenario:
    """The issue's case: a 600/min group, every tenant's share 60/min; tenant A queues
    200, then nine tenants queue 50 each (within their shares)."""
    arrivals = [Arrival("A", "interactive", 0.0) for _ in range(200)]
    arrivals += [Arrival(f"T{t}", "interactive", 0.01) for t in range(9) for _ in range(50)]
    window = f"{WINDOW_S:g}s"
    return Scenario(
        "isolation",
        {"requests": f"600/{window}", "tenant": {"requests": f"60/{window}"}},
        arrivals,
    )


def weights(per_weight: int = 600) -> Scenario:
    """Three tenants weighted 1:1:2 on one quota of 100/s, no tenant caps, each with a
    backlog of 600 per unit of weight, sent one tenant after the other (a, b, c)."""
    arrivals = [
        Arrival(tenant, "interactive", 0.0)
        for tenant, weight in (("a", 1), ("b", 1), ("c", 2))
        for _ in range(per_weight * weight)
    ]
    return Scenario("weights", {"requests": "100/s", "tenants": {"c": {"weight": 2}}}, arrivals)


def priority(batch: int = 5000, seconds: float = 30.0) -> Scenario:
    """A 5,000-task batch lane saturates 100/s; an interactive lane arrives at 10/s
    (10% of the limit); the batch lane's min share is 0.1."""
    arrivals = [Arrival("etl", "batch", 0.0) for _ in range(batch)]
    arrivals += [Arrival("web", "interactive", 1.0 + k / 10) for k in range(int(seconds * 10))]
    return Scenario(
        "priority",
        {"requests": "100/s"},
        arrivals,
        scheduler={"lanes": ["interactive", "batch"], "min_share": {"batch": 0.1}},
    )


def pause(backlog: int = 1500) -> Scenario:
    """A 429 pause of 3 s, 5 s into a saturated backlog of a 100/s group."""
    return Scenario(
        "pause",
        {"requests": "100/s"},
        [Arrival("etl", "batch", 0.0) for _ in range(backlog)],
        events=[Event(5.0, 3.0)],
    )


SCENARIOS: dict[str, Callable[[], Scenario]] = {
    "isolation": isolation,
    "weights": weights,
    "priority": priority,
    "pause": pause,
}


# -- figures ---------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def per_window(starts: Sequence[Start], window_s: float) -> dict[int, Counter[str]]:
    windows: dict[int, Counter[str]] = defaultdict(Counter)
    for s in starts:
        windows[int(s.start_s // window_s)][s.tenant] += 1
    return windows


def jain(values: Sequence[float]) -> float:
    total = sum(values)
    squares = sum(v * v for v in values)
    return total * total / (len(values) * squares) if squares else float("nan")


def isolation_figures(run: Run, config: Config) -> dict[str, Any]:
    """Per window: starts over the group's limit and over what the tenants' caps let
    run (their backlog at the window's start, at most their cap's rate for a window plus
    their bucket's initial fill in the first)."""
    settings = config.groups[run.subject]
    group_cap = settings.dimensions[0].capacity
    group_rate = group_cap / settings.dimensions[0].period_s
    tenant_dim = settings.tenant_dimensions[0]
    cold = settings.cold_start
    backlog = Counter(s.tenant for s in run.starts)
    windows = per_window(run.starts, WINDOW_S)
    rows = []
    for k in range(max(windows) + 1):
        allowed = group_rate * WINDOW_S + (cold * group_cap if k == 0 else 0.0)
        tenant_allowance = tenant_dim.capacity / tenant_dim.period_s * WINDOW_S + (
            cold * tenant_dim.capacity if k == 0 else 0.0
        )
        eligible = min(allowed, sum(min(n, tenant_allowance) for n in backlog.values()))
        started = sum(windows[k].values())
        if eligible >= 1:
            rows.append(
                {
                    "window": k,
                    "starts": started,
                    "of_limit": started / (group_rate * WINDOW_S),
                    "of_eligible": started / eligible,
                }
            )
        backlog -= windows[k]
    others = [s for s in run.starts if s.tenant != "A"]
    first_wait = {
        t: min(s.wait_s for s in others if s.tenant == t) for t in {s.tenant for s in others}
    }
    return {
        "windows": rows,
        "first_window_of_limit": rows[0]["of_limit"] if rows else float("nan"),
        "worst_of_eligible": min((r["of_eligible"] for r in rows[:-1] or rows), default=0.0),
        "others_first_start_max_s": max(first_wait.values()),
        "others_done_s": max(s.start_s for s in others),
    }


def weights_figures(run: Run, weight: Mapping[str, float], window_s: float) -> dict[str, Any]:
    windows = per_window(run.starts, window_s)
    last_full = int(min(max(s.start_s for s in run.starts if s.tenant == t) for t in weight))
    rows = []
    for k in range(1, int(last_full // window_s)):
        total = sum(windows[k].values())
        shares = {t: windows[k][t] / total for t in weight}
        rows.append(
            {
                "window": k,
                "shares": shares,
                "jain": jain([shares[t] / w for t, w in weight.items()]),
            }
        )
    return {
        "windows": rows,
        "jain_min": min((r["jain"] for r in rows), default=float("nan")),
        "worst_share_error_pp": max(
            (
                abs(r["shares"][t] - w / sum(weight.values())) * 100
                for r in rows
                for t, w in weight.items()
            ),
            default=float("nan"),
        ),
    }


def priority_figures(run: Run, emission_s: float) -> dict[str, Any]:
    interactive = [s for s in run.starts if s.lane == "interactive"]
    last = max(s.start_s for s in interactive)
    during = [s for s in run.starts if 1.0 <= s.start_s <= last]
    waits = [s.wait_s for s in interactive]
    return {
        "interactive_wait_p50_s": percentile(waits, 0.5),
        "interactive_wait_p99_s": percentile(waits, 0.99),
        "bound_s": 2 * emission_s + HOLD_HORIZON_S,
        "batch_share_while_interactive": sum(s.lane == "batch" for s in during) / len(during),
    }


def pause_figures(run: Run, rate_per_s: float, capacity: float, event: Event) -> dict[str, Any]:
    """Most starts in any 1 s window after the pause ends, against rate x 1 s + capacity;
    and whether anything started inside the pause."""
    ends = event.at_s + event.pause_s
    after = sorted(s.start_s for s in run.starts if s.start_s >= ends)
    inside = sum(event.at_s + 0.1 < s.start_s < ends for s in run.starts)
    most, j = 0, 0
    for i, t in enumerate(after):
        while after[j] < t - 1.0:
            j += 1
        most = max(most, i - j + 1)
    return {
        "starts_inside_pause": inside,
        "most_starts_in_1s_after": most,
        "bound": rate_per_s * 1.0 + capacity,
    }


# -- the report ------------------------------------------------------------------------


def fmt(x: float, digits: int = 2) -> str:
    return f"{x:.{digits}f}"


def report(name: str, runs: Sequence[tuple[Run, Run]], scenario: Scenario) -> dict[str, Any]:
    config = config_for(scenario)
    out: dict[str, Any] = {}
    for fifo_run, fair_run in runs:
        for run in (fifo_run, fair_run):
            if name == "isolation":
                figures = isolation_figures(run, config)
            elif name == "weights":
                figures = weights_figures(run, {"a": 1, "b": 1, "c": 2}, 2.0)
            elif name == "priority":
                figures = priority_figures(run, 0.01)
            else:
                if run.subject == "fifo":
                    continue  # FIFO admission in isolation has no pause to replay
                figures = pause_figures(run, 100.0, 100.0, scenario.events[0])
            out.setdefault(run.subject, []).append(figures)
    return out


def print_tables(results: Mapping[str, Mapping[str, list[dict[str, Any]]]]) -> None:
    """One markdown row per figure: the worst over the rounds of each subject."""

    def row(scenario: str, title: str, label: str, key: str, target: str, digits: int = 2) -> None:
        pick = min if key in LOWER_IS_WORSE else max
        cells = []
        for subject in ("fifo", "fair"):
            rows = results[scenario].get(subject)
            cells.append(fmt(pick(r[key] for r in rows), digits) if rows else "-")
        print(f"| {title} | {label} | {cells[0]} | {cells[1]} | {target} |")

    print("\n| scenario | figure | FIFO (before) | fair | target |")
    print("|---|---|---|---|---|")
    if "isolation" in results:
        for key, label, target in (
            ("first_window_of_limit", "starts in the first minute / group limit", ""),
            ("worst_of_eligible", "worst window: starts / what the caps let run", ">= 0.95"),
            ("others_first_start_max_s", "the nine: latest first start, s", "<= 2 (horizon)"),
            ("others_done_s", "the nine: last start, s", ""),
        ):
            row("isolation", "isolation", label, key, target)
    if "weights" in results:
        title = "weights 1:1:2"
        row("weights", title, "Jain's index of share/weight, worst window", "jain_min",
            ">= 0.99", 3)  # fmt: skip
        row("weights", title, "worst share error, points", "worst_share_error_pp", "<= 5", 1)
    if "priority" in results:
        bound = results["priority"]["fair"][0]["bound_s"]
        for key, label, target in (
            ("interactive_wait_p50_s", "interactive wait p50, s", ""),
            ("interactive_wait_p99_s", "interactive wait p99, s", f"<= {bound:g}"),
            ("batch_share_while_interactive", "batch lane's share meanwhile", ">= 0.1"),
        ):
            row("priority", "priority", label, key, target)
    if "pause" in results:
        bound = results["pause"]["fair"][0]["bound"]
        row("pause", "pause 3 s", "most starts in 1 s after it", "most_starts_in_1s_after",
            f"<= {bound:g}", 0)  # fmt: skip
        row("pause", "pause 3 s", "starts inside the pause", "starts_inside_pause", "0", 0)


#: Figures whose worst round is the lowest (for the others it is the highest).
LOWER_IS_WORSE = frozenset(
    {"first_window_of_limit", "worst_of_eligible", "jain_min", "batch_share_while_interactive"}
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=",".join(SCENARIOS), help="scenarios, comma-separated")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each scenario")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}")
    results: dict[str, Any] = {}
    with EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url)
        for round_no in range(args.rounds):
            for name in names:
                scenario = SCENARIOS[name]()
                began = time.monotonic()
                runs = run_scenario(client, scenario, f"fair-bench-{round_no}-{name}")
                figures = report(name, [runs], scenario)
                for subject, rows in figures.items():
                    results.setdefault(name, {}).setdefault(subject, []).extend(rows)
                print(f"{name}: round {round_no + 1} in {time.monotonic() - began:.0f} s",
                      file=sys.stderr)  # fmt: skip
    print_tables(results)
    path = write_raw("fairness", {"machine": machine(), "results": results})
    print(f"\nraw: {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
